//! Administration commands that act on the store (`rtcplane turn user …`).

use std::io::{BufRead, Write};

use anyhow::{Context, bail};

use crate::cli::{TurnCommand, TurnUserCommand};
use crate::config::Config;
use crate::serve::connect_migrated;

/// `rtcplane turn …`.
pub(crate) async fn turn(config: &Config, command: TurnCommand) -> anyhow::Result<()> {
    let TurnCommand::User { command } = command;
    let storage = connect_migrated(config).await?;
    let mut out = std::io::stdout().lock();
    let result = match command {
        TurnUserCommand::Add {
            name,
            password,
            password_stdin,
            realm,
        } => {
            let password = match (password, password_stdin) {
                (Some(p), false) => p,
                (None, true) => {
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .context("reading the password from stdin")?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
                _ => bail!("give the password with --password or --password-stdin"),
            };
            let realm = realm.unwrap_or_else(|| config.turn.realm.clone());
            rtcplane_turn_relay::users::add(&storage, &realm, &name, &password).await?;
            writeln!(out, "added {name} in realm {realm}")?;
            Ok(())
        }
        TurnUserCommand::Del { name, realm } => {
            let realm = realm.unwrap_or_else(|| config.turn.realm.clone());
            if rtcplane_turn_relay::users::delete(&storage, &realm, &name).await? {
                writeln!(out, "deleted {name} from realm {realm}")?;
                Ok(())
            } else {
                bail!("no user {name} in realm {realm}")
            }
        }
        TurnUserCommand::List { realm } => {
            for u in rtcplane_turn_relay::users::list(&storage, realm.as_deref()).await? {
                writeln!(out, "{}\t{}", u.realm, u.name)?;
            }
            Ok(())
        }
    };
    storage.close().await;
    result
}
