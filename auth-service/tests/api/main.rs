mod hardening;
mod helpers;
mod key_rotation;
mod limits;
mod login;
mod refresh;
mod signing_key;
mod signup;
