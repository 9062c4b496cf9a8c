//! The admin console, in PgBouncer's manner: the virtual database
//! [`pgbastion`](settings::CONSOLE_DATABASE) on every listener, for the users of `[admin]`,
//! answering SHOW commands and control commands (RELOAD, PAUSE, KILL, SHUTDOWN…) through
//! the Simple Query protocol. docs/operations.md, "Admin console", describes the commands.

pub mod command;
pub mod config_view;
pub mod console;
pub mod control;
pub mod gate;
pub mod pause;
pub mod settings;
pub mod show;
pub mod table;
pub mod verbs;
