mod accounts;
mod helpers;
mod history;
mod load;
mod rooms;
