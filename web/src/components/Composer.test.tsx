import { render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
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
});
