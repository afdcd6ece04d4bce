import { render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import { loadDraft } from '../drafts';
import { Composer } from './Composer';

describe('Composer', () => {
  it('sends on Enter and starts a new line on Shift+Enter', async () => {
    const onSend = vi.fn();
    render(<Composer room="general" onSend={onSend} onTyping={vi.fn()} />);
    const box = screen.getByLabelText('Message #general');
    await userEvent.type(box, 'line one{Shift>}{Enter}{/Shift}line two');
    expect(onSend).not.toHaveBeenCalled();
    expect(box).toHaveValue('line one\nline two');
    await userEvent.type(box, '{Enter}');
    expect(onSend).toHaveBeenCalledWith('line one\nline two');
    expect(box).toHaveValue('');
  });

  it('does not send an empty message', async () => {
    const onSend = vi.fn();
    render(<Composer room="general" onSend={onSend} onTyping={vi.fn()} />);
    await userEvent.type(screen.getByLabelText('Message #general'), '   {Enter}');
    expect(onSend).not.toHaveBeenCalled();
  });

  it('reports typing while the user writes', async () => {
    const onTyping = vi.fn();
    render(<Composer room="general" onSend={vi.fn()} onTyping={onTyping} />);
    await userEvent.type(screen.getByLabelText('Message #general'), 'hi');
    expect(onTyping).toHaveBeenCalled();
  });

  it('disables Send past the length limit', async () => {
    render(<Composer room="general" onSend={vi.fn()} onTyping={vi.fn()} />);
    const box = screen.getByLabelText('Message #general');
    await userEvent.click(box);
    await userEvent.paste('x'.repeat(4000));
    expect(screen.getByRole('button', { name: 'Send' })).toBeEnabled();
    await userEvent.type(box, 'y');
    expect(screen.getByRole('button', { name: 'Send' })).toBeDisabled();
    expect(screen.getByText('4001/4000')).toBeInTheDocument();
  });

  it('keeps what was written per room when the room is left and opened again', async () => {
    const first = render(<Composer room="general" draftKey="general" onSend={vi.fn()} onTyping={vi.fn()} />);
    await userEvent.type(screen.getByLabelText('Message #general'), 'half a thought');
    first.unmount();
    const other = render(<Composer room="random" draftKey="random" onSend={vi.fn()} onTyping={vi.fn()} />);
    expect(screen.getByLabelText('Message #random')).toHaveValue('');
    other.unmount();
    const onSend = vi.fn();
    render(<Composer room="general" draftKey="general" onSend={onSend} onTyping={vi.fn()} />);
    const box = screen.getByLabelText('Message #general');
    expect(box).toHaveValue('half a thought');
    await userEvent.type(box, '{Enter}');
    expect(onSend).toHaveBeenCalledWith('half a thought');
    expect(loadDraft('general')).toBe('');
  });

  it('edits the last own message on ↑ in an empty box, and not while text is written', async () => {
    const onEditLast = vi.fn(() => true);
    render(<Composer room="general" onSend={vi.fn()} onTyping={vi.fn()} onEditLast={onEditLast} />);
    const box = screen.getByLabelText('Message #general');
    await userEvent.type(box, 'x{ArrowUp}');
    expect(onEditLast).not.toHaveBeenCalled();
    await userEvent.type(box, '{Backspace}{ArrowUp}');
    expect(onEditLast).toHaveBeenCalledTimes(1);
  });

  it('shows the message being answered, and Escape drops the reply', async () => {
    const onCancelReply = vi.fn();
    render(
      <Composer
        room="general"
        onSend={vi.fn()}
        onTyping={vi.fn()}
        replyTo={{ id: '01', author: { id: 'u-bob', username: 'bob' }, excerpt: 'the question' }}
        onCancelReply={onCancelReply}
      />,
    );
    expect(screen.getByTestId('composer-reply')).toHaveTextContent('Replying to bob the question');
    await userEvent.type(screen.getByLabelText('Message #general'), '{Escape}');
    expect(onCancelReply).toHaveBeenCalled();
  });
});
