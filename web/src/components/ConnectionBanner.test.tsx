import { render, screen } from '@testing-library/react';
import { describe, expect, it, vi } from 'vitest';
import { ConnectionBanner } from './ConnectionBanner';

describe('ConnectionBanner', () => {
  it('is hidden while connected', () => {
    render(<ConnectionBanner connection={{ status: 'open', retryAt: null, everOpened: true }} onRetryNow={vi.fn()} />);
    expect(screen.queryByTestId('connection-banner')).toBeNull();
  });

  it('says the connection is down and when it retries', () => {
    render(
      <ConnectionBanner
        connection={{ status: 'disconnected', retryAt: Date.now() + 3000, everOpened: true }}
        onRetryNow={vi.fn()}
      />,
    );
    const banner = screen.getByTestId('connection-banner');
    expect(banner).toHaveTextContent(/Disconnected\. Reconnecting in 3 s/);
    expect(screen.getByRole('button', { name: 'Retry now' })).toBeInTheDocument();
  });
});
