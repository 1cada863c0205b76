//! Administration commands: on the store (`rtcplane turn user …`, `rtcplane hooks key …`) or, for the SIP
//! agent whose state lives in the running server, on its admin API (`rtcplane sip account …`).

use std::io::{BufRead, Write};

use anyhow::{Context, bail};

use crate::cli::{
    HooksCommand, HooksKeyCommand, SipAccountCommand, SipCommand, TurnCommand, TurnUserCommand,
};
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
            let password = read_secret(password, password_stdin, "--password")?;
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
        TurnUserCommand::Limit {
            name,
            quota,
            max_bps,
            user_max_bps,
            clear,
            realm,
        } => {
            let realm = realm.unwrap_or_else(|| config.turn.realm.clone());
            if clear {
                if rtcplane_turn_relay::users::delete_limits(&storage, &realm, &name).await? {
                    writeln!(out, "cleared the limits of {name} in realm {realm}")?;
                    Ok(())
                } else {
                    bail!("no limits for {name} in realm {realm}")
                }
            } else {
                let limits = rtcplane_turn_relay::users::UserLimits {
                    quota,
                    max_bps,
                    user_max_bps,
                };
                if limits == rtcplane_turn_relay::users::UserLimits::default() {
                    bail!("give --quota, --max-bps or --user-max-bps (or --clear)");
                }
                rtcplane_turn_relay::users::set_limits(&storage, &realm, &name, &limits).await?;
                writeln!(
                    out,
                    "limits of {name} in realm {realm}: {}",
                    show_limits(&limits)
                )?;
                Ok(())
            }
        }
        TurnUserCommand::Limits { realm } => {
            for l in rtcplane_turn_relay::users::list_limits(&storage, realm.as_deref()).await? {
                writeln!(out, "{}\t{}\t{}", l.realm, l.name, show_limits(&l.limits))?;
            }
            Ok(())
        }
    };
    storage.close().await;
    result
}

/// `quota=2 max_bps=- user_max_bps=0` (`-`: the configured value).
fn show_limits(l: &rtcplane_turn_relay::users::UserLimits) -> String {
    let v = |x: Option<u64>| x.map_or_else(|| "-".to_owned(), |n| n.to_string());
    format!(
        "quota={} max_bps={} user_max_bps={}",
        v(l.quota.map(u64::from)),
        v(l.max_bps),
        v(l.user_max_bps)
    )
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

/// A password given on the command line (`flag`) or as the first line of standard input (`flag-stdin`).
fn read_secret(given: Option<String>, stdin: bool, flag: &str) -> anyhow::Result<String> {
    match (given, stdin) {
        (Some(p), false) => Ok(p),
        (None, true) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            Ok(line.trim_end_matches(['\r', '\n']).to_owned())
        }
        _ => bail!("give the password with {flag} or {flag}-stdin"),
    }
}

/// `rtcplane sip …`: calls the running server's admin API, where the agent's state lives.
pub(crate) async fn sip(
    config: &Config,
    admin: Option<String>,
    command: SipCommand,
) -> anyhow::Result<()> {
    let SipCommand::Account { command } = command;
    let base = admin
        .unwrap_or_else(|| format!("http://{}", config.http.admin_listen))
        .trim_end_matches('/')
        .to_owned();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let url = |path: &str| format!("{base}/api/v1/sip/registrations{path}");
    let send = |req: reqwest::RequestBuilder| async {
        let resp = req.send().await.with_context(|| {
            format!(
                "cannot reach the admin API at {base} (is `rtcplane serve` running? --admin URL)"
            )
        })?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            let message = body["error"]["message"]
                .as_str()
                .map_or_else(|| body.to_string(), str::to_owned);
            bail!("{status}: {message}");
        }
        Ok(body)
    };
    let mut out = std::io::stdout().lock();
    match command {
        SipAccountCommand::Add {
            user,
            realm,
            pass,
            pass_stdin,
            contact,
            id,
        } => {
            let pass = read_secret(pass, pass_stdin, "--pass")?;
            let body = serde_json::json!({"subscriber_id": id, "user": user, "pass": pass, "realm": realm, "contact": contact});
            let v = send(client.post(url("")).json(&body)).await?;
            writeln!(out, "{}", v["subscriber_id"])?;
        }
        SipAccountCommand::Update {
            id,
            user,
            realm,
            pass,
            pass_stdin,
            contact,
        } => {
            let pass = read_secret(pass, pass_stdin, "--pass")?;
            let body =
                serde_json::json!({"user": user, "pass": pass, "realm": realm, "contact": contact});
            let v = send(client.put(url(&format!("/{id}"))).json(&body)).await?;
            writeln!(out, "{id}\t{}", v["status"].as_str().unwrap_or_default())?;
        }
        SipAccountCommand::Del { id } => {
            send(client.delete(url(&format!("/{id}")))).await?;
            writeln!(out, "{id}\tto_be_removed")?;
        }
        SipAccountCommand::Refresh { id } => {
            send(client.post(url(&format!("/{id}/refresh")))).await?;
            writeln!(out, "{id}\trefresh queued")?;
        }
        SipAccountCommand::Show { id } => {
            let v = send(client.get(url(&format!("/{id}")))).await?;
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        SipAccountCommand::List {
            status,
            user,
            realm,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(status.map(|s| ("status", s)));
            query.extend(user.map(|s| ("user", s)));
            query.extend(realm.map(|s| ("realm", s)));
            let query: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query)
                .finish();
            let v = send(client.get(format!("{}?{query}", url("")))).await?;
            for r in v["registrations"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "{}\t{}@{}\t{}\t{}\t{}\t{}",
                    r["subscriber_id"],
                    r["user"].as_str().unwrap_or_default(),
                    r["realm"].as_str().unwrap_or_default(),
                    r["status"].as_str().unwrap_or_default(),
                    r["last_code"],
                    r["last_reason"].as_str().unwrap_or("-"),
                    r["expiry"].as_str().unwrap_or("-"),
                )?;
            }
            writeln!(
                out,
                "{} of {}",
                v["registrations"].as_array().map_or(0, Vec::len),
                v["total"]
            )?;
        }
    }
    Ok(())
}
