mod accounts;
mod changes;
mod helpers;
mod history;
mod load;
mod room_list;
mod rooms;
mod settings;
