/**
 * The control that turns desktop notifications on and off (`notifications.ts`). The browser's
 * permission is asked only when it is clicked; a browser without notifications shows nothing,
 * and one where they are blocked says so.
 */
import { useState } from 'react';
import { browserNotifications, notificationsWanted, setNotificationsWanted, type NotificationApi } from '../notifications';

export function NotificationToggle({ api = browserNotifications }: { api?: NotificationApi }) {
  const [permission, setPermission] = useState(() => api.permission());
  const [wanted, setWanted] = useState(notificationsWanted);
  if (permission === 'unsupported') return null;
  if (permission === 'denied') {
    return (
      <p className="muted notifications-note" data-testid="notifications-blocked">
        Notifications are blocked in this browser’s settings.
      </p>
    );
  }
  const choose = (on: boolean) => {
    setNotificationsWanted(on);
    setWanted(on);
  };
  const enable = async () => {
    const answer = permission === 'granted' ? permission : await api.request();
    setPermission(answer);
    if (answer === 'granted') choose(true);
  };
  return permission === 'granted' && wanted ? (
    <button type="button" className="link notifications-toggle" onClick={() => choose(false)}>
      Turn off notifications
    </button>
  ) : (
    <button type="button" className="secondary notifications-toggle" onClick={() => void enable()}>
      Enable notifications
    </button>
  );
}
