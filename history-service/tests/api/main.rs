mod accounts;
mod helpers;
mod history;
