mod helpers;
mod history;
