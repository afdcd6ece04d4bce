mod broker;
mod fanout;
mod helpers;
mod http;
mod idempotency;
mod protocol;
mod receipts;
mod security;
