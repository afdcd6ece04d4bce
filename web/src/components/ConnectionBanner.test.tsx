import { render, screen } from '@testing-library/react';
import { describe, expect, it, vi } from 'vitest';
import { ConnectionBanner } from './ConnectionBanner';

describe('ConnectionBanner', () => {
  it('is hidden while connected', () => {
    render(<ConnectionBanner connection={{ status: 'open', retryAt: null, everOpened: true, offline: false }} onRetryNow={vi.fn()} />);
    expect(screen.queryByTestId('connection-banner')).toBeNull();
  });

  it('says the connection is down and when it retries', () => {
    render(
      <ConnectionBanner
        connection={{ status: 'disconnected', retryAt: Date.now() + 3000, everOpened: true, offline: false }}
        onRetryNow={vi.fn()}
      />,
    );
    const banner = screen.getByTestId('connection-banner');
    expect(banner).toHaveTextContent(/Disconnected\. Reconnecting in 3 s/);
    expect(screen.getByRole('button', { name: 'Retry now' })).toBeInTheDocument();
  });

  it('says the browser is offline rather than counting down', () => {
    render(
      <ConnectionBanner
        connection={{ status: 'disconnected', retryAt: Date.now() + 3000, everOpened: true, offline: true }}
        onRetryNow={vi.fn()}
      />,
    );
    const banner = screen.getByTestId('connection-banner');
    expect(banner).toHaveAttribute('data-state', 'offline');
    expect(banner).toHaveTextContent(/You are offline/);
  });
});
