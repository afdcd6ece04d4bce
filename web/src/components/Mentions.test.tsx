import { render, screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import { emptyRoom } from '../store';
import { Composer } from './Composer';
import { MessageList } from './MessageList';

const me = { id: 'u1', username: 'alice' };
const members = [me, { id: 'u2', username: 'bob' }, { id: 'u3', username: 'bobby' }, { id: 'u4', username: 'carol' }];

function composer(onSend = vi.fn()) {
  render(<Composer room="general" onSend={onSend} onTyping={vi.fn()} members={members} meId={me.id} />);
  return screen.getByLabelText('Message #general');
}

const options = () => within(screen.getByRole('listbox', { name: 'Members to mention' })).getAllByRole('option');

describe('mention autocomplete', () => {
  it('offers the members whose name starts with what follows @, not the user', async () => {
    const box = composer();
    await userEvent.type(box, 'hi @');
    expect(options().map((o) => o.textContent)).toEqual(['@bob', '@bobby', '@carol']);
    await userEvent.type(box, 'Bo');
    expect(options().map((o) => o.textContent)).toEqual(['@bob', '@bobby']);
    expect(box).toHaveAttribute('aria-activedescendant', options()[0]!.id);
    await userEvent.type(box, 'x');
    expect(screen.queryByRole('listbox')).toBeNull();
  });

  it('moves with the arrows and puts the chosen member in with Enter, without sending', async () => {
    const onSend = vi.fn();
    const box = composer(onSend);
    await userEvent.type(box, 'ask @b{ArrowDown}');
    expect(options()[1]).toHaveAttribute('aria-selected', 'true');
    expect(box).toHaveAttribute('aria-activedescendant', options()[1]!.id);
    // Down past the last wraps to the first, up from the first to the last.
    await userEvent.keyboard('{ArrowDown}');
    expect(options()[0]).toHaveAttribute('aria-selected', 'true');
    await userEvent.keyboard('{ArrowUp}');
    expect(options()[1]).toHaveAttribute('aria-selected', 'true');
    await userEvent.keyboard('{Enter}');
    expect(box).toHaveValue('ask @bobby ');
    expect(onSend).not.toHaveBeenCalled();
    expect(screen.queryByRole('listbox')).toBeNull();
    await userEvent.keyboard('now{Enter}');
    expect(onSend).toHaveBeenCalledWith('ask @bobby now');
  });

  it('takes Tab as Enter, and Escape closes the list so Enter sends', async () => {
    const onSend = vi.fn();
    const box = composer(onSend);
    await userEvent.type(box, '@ca{Tab}');
    expect(box).toHaveValue('@carol ');
    expect(box).toHaveFocus();
    await userEvent.type(box, 'and @bo{Escape}');
    expect(screen.queryByRole('listbox')).toBeNull();
    await userEvent.keyboard('{Enter}');
    expect(onSend).toHaveBeenCalledWith('@carol and @bo');
  });

  it('puts in the member clicked', async () => {
    const box = composer();
    await userEvent.type(box, 'hey @');
    await userEvent.click(screen.getByRole('option', { name: '@carol' }));
    expect(box).toHaveValue('hey @carol ');
    expect(box).toHaveFocus();
  });
});

describe('messages that mention the user', () => {
  const bob = members[1]!;
  const msg = (id: string, body: string, author = bob) => ({ room: 'general', id, client_id: null, author, body, sent_at: '2024-06-01T12:00:00Z' });

  it('are highlighted, with the mention as a span of its own', () => {
    render(
      <MessageList
        room={{
          ...emptyRoom('general'),
          joined: true,
          messages: [msg('01', 'hey @ALICE, look'), msg('02', 'ask @alice.smith or @bob'), msg('03', 'note to self @alice', me)],
        }}
        connected
        meId={me.id}
        meName={me.username}
        onLoadOlder={vi.fn()}
        onRetry={vi.fn()}
      />,
    );
    const [first, second, own] = screen.getAllByTestId('message');
    expect(first).toHaveAttribute('data-mentioned', 'true');
    expect(first).toHaveClass('mentioned');
    expect(first).toHaveTextContent('mentions you');
    const mention = within(first!).getByTestId('mention');
    expect(mention.tagName).toBe('SPAN');
    expect(mention).toHaveTextContent('@ALICE');
    expect(mention).toHaveClass('mention', 'me');
    expect(second).not.toHaveAttribute('data-mentioned');
    expect(within(second!).getAllByTestId('mention').map((m) => [m.textContent, m.classList.contains('me')])).toEqual([
      ['@alice.smith', false],
      ['@bob', false],
    ]);
    // The user's own message is not highlighted for them.
    expect(own).not.toHaveAttribute('data-mentioned');
  });
});
