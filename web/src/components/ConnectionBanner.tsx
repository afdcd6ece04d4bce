/** Tells the user, visibly and to screen readers, when the live connection is down. */
import { useEffect, useState } from 'react';
import type { ConnectionState } from '../store';

interface ConnectionBannerProps {
  connection: ConnectionState;
  onRetryNow: () => void;
}

function useSecondsUntil(at: number | null): number | null {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (at === null) return;
    setNow(Date.now());
    const t = setInterval(() => setNow(Date.now()), 500);
    return () => clearInterval(t);
  }, [at]);
  return at === null ? null : Math.max(0, Math.ceil((at - now) / 1000));
}

export function ConnectionBanner({ connection, onRetryNow }: ConnectionBannerProps) {
  const seconds = useSecondsUntil(connection.status === 'disconnected' ? connection.retryAt : null);
  if (connection.status === 'open' || connection.status === 'stopped') return null;
  if (connection.offline) {
    return (
      <div className="banner banner-warn" role="status" data-testid="connection-banner" data-state="offline">
        <span>You are offline. Messages you write are sent when the connection is back.</span>
      </div>
    );
  }
  if (connection.status === 'connecting' && !connection.everOpened) {
    return (
      <div className="banner banner-info" role="status" data-testid="connection-banner" data-state="connecting">
        Connecting…
      </div>
    );
  }
  return (
    <div className="banner banner-warn" role="status" data-testid="connection-banner" data-state={connection.status}>
      <span>
        Disconnected.{' '}
        {connection.status === 'connecting' || seconds === 0
          ? 'Reconnecting…'
          : `Reconnecting in ${seconds ?? ''} s…`}
      </span>
      {connection.status === 'disconnected' && (
        <button type="button" className="link" onClick={onRetryNow}>
          Retry now
        </button>
      )}
    </div>
  );
}
