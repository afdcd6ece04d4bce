mod fanout;
mod helpers;
mod http;
mod protocol;
