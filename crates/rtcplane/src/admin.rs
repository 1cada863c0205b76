//! Administration commands that act on the store (`rtcplane turn user …`).

use std::io::{BufRead, Write};

use anyhow::{Context, bail};

use crate::cli::{HooksCommand, HooksKeyCommand, TurnCommand, TurnUserCommand};
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

/// `rtcplane hooks …`.
pub(crate) async fn hooks(config: &Config, command: HooksCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        HooksCommand::Token {
            app,
            stream,
            action,
            ttl,
            rule,
        } => {
            let rules = &config.hooks.rules;
            let pick = |(i, r): &(usize, &rtcplane_hook_gateway::config::Rule)| match &rule {
                Some(sel) => r.name == *sel || i.to_string() == *sel,
                None => r.then == rtcplane_hook_gateway::config::Then::Token,
            };
            let Some((i, r)) = rules.iter().enumerate().find(pick) else {
                bail!(
                    "no token rule in hooks.rules{}",
                    rule.map(|r| format!(" named {r:?}")).unwrap_or_default()
                );
            };
            let Some(key) = r.token_keys.first() else {
                bail!("hooks.rules[{i}] has no token_keys");
            };
            let expires = chrono::Utc::now().timestamp()
                + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
            let token =
                rtcplane_hook_gateway::sign_token(key.as_bytes(), &action, &app, &stream, expires);
            writeln!(
                out,
                "{}={token}&{}={expires}",
                config.hooks.token_param, config.hooks.expires_param
            )?;
            Ok(())
        }
        HooksCommand::Key { command } => {
            let storage = connect_migrated(config).await?;
            let keys = rtcplane_hook_gateway::Keys::new(storage.clone());
            let result = match command {
                HooksKeyCommand::Add {
                    app,
                    stream,
                    key,
                    description,
                } => match keys.add(&app, &stream, key, &description).await {
                    Ok(k) => {
                        writeln!(out, "{k}")?;
                        Ok(())
                    }
                    Err(e) => Err(anyhow::anyhow!(e)),
                },
                HooksKeyCommand::Del { selector } => match keys.delete(&selector).await {
                    Ok(0) => Err(anyhow::anyhow!("no stream key matches {selector:?}")),
                    Ok(n) => {
                        writeln!(out, "deleted {n} key(s)")?;
                        Ok(())
                    }
                    Err(e) => Err(anyhow::anyhow!(e)),
                },
                HooksKeyCommand::List => match keys.list().await {
                    Ok(list) => {
                        for k in list {
                            writeln!(
                                out,
                                "{}\t{}/{}\t{}",
                                k.fingerprint, k.app, k.stream, k.description
                            )?;
                        }
                        Ok(())
                    }
                    Err(e) => Err(anyhow::anyhow!(e)),
                },
            };
            storage.close().await;
            result
        }
    }
}
