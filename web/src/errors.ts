/**
 * The words shown for each error code the servers send (docs/protocol.md: WebSocket `error`
 * frames and HTTP error bodies). The servers' own messages are written for developers and
 * logs; the user sees one of these instead, and a code this client does not know gets a
 * generic sentence, never the raw message.
 */
import { ApiError } from './api';

const TEXTS: Readonly<Record<string, string>> = {
  // WebSocket frames.
  malformed_json: 'The app sent something the server did not understand. Reload the page.',
  invalid_frame: 'The app sent something the server did not understand. Reload the page.',
  unknown_type: 'The app sent something the server did not understand. Reload the page.',
  unsupported_frame: 'The app sent something the server did not understand. Reload the page.',
  invalid_room: 'That is not a valid room name.',
  invalid_body: 'This message cannot be sent: it is empty or too long.',
  invalid_client_id: 'This message could not be sent. Try again.',
  invalid_since: 'The conversation could not be brought up to date. Reload the page.',
  not_joined: 'You are not in this room any more.',
  not_found: 'This room does not exist, or it is private and you are not a member.',
  invalid_reply_to: 'The message you replied to is not in this room.',
  edit_window_passed: 'This message is too old to edit.',
  message_deleted: 'This message was deleted.',
  too_many_reactions: 'This message has as many different reactions as it can take.',
  invalid_emoji: 'That reaction is not a single emoji.',
  invalid_id: 'That message cannot be found.',
  forbidden: 'You are not allowed to do that here.',
  banned: 'You are banned from this room.',
  archived: 'This room is archived: it is read-only now.',
  invalid_marker: 'Your read position could not be saved.',
  already_joined: 'You are already in this room.',
  too_many_rooms: 'You are in too many rooms at once (at most 100 rooms per connection). Close some and try again.',
  unavailable: 'Chat is busy right now. Trying again in a moment.',
  duplicate_client_id: 'This message could not be sent. Try again.',
  rate_limited: 'You are sending too fast. Wait a moment.',
  unauthorized: 'Your session has ended. Please log in again.',
  invalid_token: 'Your session has ended. Please log in again.',
  // HTTP bodies.
  bad_path: 'That address is not valid.',
  request_timeout: 'The request took too long. Try again.',
  payload_too_large: 'That is too long to send.',
  upstream_unavailable: 'The server is unavailable right now. Please try again shortly.',
  upstream_timeout: 'The server is taking too long to answer. Please try again shortly.',
  network: 'Could not reach the server. Check your connection.',
  invalid_credentials: 'Wrong username or password.',
  username_taken: 'That username is already taken.',
  email_taken: 'An account with that email already exists.',
  validation_failed: 'Please correct the highlighted fields.',
  conflict: 'Someone changed this at the same time. Reload and try again.',
  internal: 'Something went wrong on the server. Please try again.',
};

/** HTTP codes whose server messages are technical; the others' messages state a rule for the user. */
const HTTP_GENERIC = new Set([
  'bad_path',
  'request_timeout',
  'payload_too_large',
  'upstream_unavailable',
  'upstream_timeout',
  'network',
  'unavailable',
  'internal',
  'unauthorized',
]);

const GENERIC = 'Something went wrong. Please try again.';

/** What to tell the user about a message the server refused (`error` with its `client_id`): it offers a retry. */
export function sendErrorText(code: string): string {
  return code === 'unavailable' ? 'Chat is busy right now; retry in a moment.' : errorCodeText(code);
}

/** Texts for refused changes of a message (edit, delete, react) where the general text is about rooms. */
const CHANGE_TEXTS: Readonly<Record<string, string>> = {
  forbidden: 'You are not allowed to change this message.',
  not_found: 'This message could not be found (it may not be stored yet). Try again in a moment.',
  invalid_body: 'The new text is empty or too long.',
  unavailable: 'Chat is busy right now; retry in a moment.',
};

/** What to tell the user about a change of a message (edit, delete, react) that the server refused. */
export function changeErrorText(code: string): string {
  return CHANGE_TEXTS[code] ?? errorCodeText(code);
}

/** What to tell the user for an error `code`; `fallback` for codes without a text of their own. */
export function errorCodeText(code: string, fallback = GENERIC): string {
  return TEXTS[code] ?? fallback;
}

/**
 * What to tell the user about a failed HTTP call. The server's message is shown only for
 * codes whose messages are written for users (validation of a form field, a name already
 * taken, a role rule), which the client cannot phrase better without knowing the form.
 */
export function apiErrorText(e: unknown, fallback = GENERIC): string {
  if (!(e instanceof ApiError)) return fallback;
  if (HTTP_GENERIC.has(e.code)) return TEXTS[e.code]!;
  if (e.status === 0) return TEXTS.network!;
  if (e.status >= 500) return TEXTS.upstream_unavailable!;
  // 4xx with a code of its own (e.g. `last_owner`, a creation rate limit): the server's sentence, which names the rule.
  return e.message.length > 0 ? e.message : fallback;
}
