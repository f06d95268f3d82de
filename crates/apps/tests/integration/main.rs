mod common;

mod echo;
mod services;
mod static1k;
mod worldtime;
