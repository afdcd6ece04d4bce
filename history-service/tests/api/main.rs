mod helpers;
mod history;
mod load;
