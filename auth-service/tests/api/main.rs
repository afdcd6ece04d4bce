mod helpers;
mod login;
mod signup;
