//! Every SQL statement of the rooms service, `?` placeholders for the three backends (migration
//! `0006_rooms.sql`). Times are unix milliseconds; a row whose `expires_at` has passed is treated as absent
//! before the sweeper deletes it, so expiry is exact whatever the sweep interval.

use rtcplane_storage::{Storage, with_pool};
use sqlx::Row;

/// A failed statement.
pub type Error = sqlx::Error;

/// A Hawk session.
#[derive(Clone, Debug)]
pub struct Session {
    /// Hash of the Hawk id.
    pub id_hash: String,
    /// The HMAC key (hex text).
    pub key: String,
    /// The user it belongs to (the id hash itself: no Firefox Accounts link).
    pub user_hash: String,
    /// Unix ms.
    pub expires_at: i64,
}

/// A room as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Room {
    /// The room token.
    pub token: String,
    /// The owner's user hash.
    pub owner_hash: String,
    /// Deprecated plain-text name.
    pub room_name: Option<String>,
    /// The owner's display name.
    pub room_owner: String,
    /// The encrypted context, JSON text.
    pub context: Option<String>,
    /// Most participants.
    pub max_size: i64,
    /// Media channel.
    pub channel: String,
    /// Media session id.
    pub session_id: String,
    /// Media API key the session id was made under.
    pub api_key: String,
    /// Requested lifetime, hours.
    pub expires_in: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms (Loop's `ctime`).
    pub updated_at: i64,
    /// Unix ms.
    pub expires_at: i64,
}

/// Who a participant is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A Hawk session (desktop client).
    Hawk,
    /// A link-clicker, authenticated afterwards with Basic and its session token.
    Link,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Hawk => "hawk",
            Self::Link => "link",
        }
    }
}

/// The last status a participant reported.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// As sent.
    pub event: String,
    /// As sent.
    pub state: String,
    /// Connections counter.
    pub connections: i64,
    /// Streams sent.
    pub send_streams: i64,
    /// Streams received.
    pub recv_streams: i64,
    /// The server's own reading of the counters (spec §5).
    pub derived_state: String,
    /// Unix ms.
    pub at: i64,
}

/// A participant as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Participant {
    /// Its room.
    pub room_token: String,
    /// Hash of its Hawk id or link-clicker token.
    pub participant_hash: String,
    /// `roomConnectionId`, a UUID v4.
    pub connection_id: String,
    /// Its Hawk user; None for link-clickers.
    pub user_hash: Option<String>,
    /// Hawk or link-clicker.
    pub kind: Kind,
    /// As given at join.
    pub display_name: String,
    /// As given at join.
    pub client_max_size: i64,
    /// `moderator` (owner) or `publisher`.
    pub role: String,
    /// Unix ms.
    pub joined_at: i64,
    /// Unix ms.
    pub expires_at: i64,
    /// Last reported status.
    pub status: Option<Status>,
}

/// The store of the rooms service.
#[derive(Clone, Debug)]
pub struct Store {
    s: Storage,
}

fn room_from<R: Row>(r: &R) -> Result<Room, Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Room {
        token: r.try_get("token")?,
        owner_hash: r.try_get("owner_hash")?,
        room_name: r.try_get("room_name")?,
        room_owner: r.try_get("room_owner")?,
        context: r.try_get("context")?,
        max_size: r.try_get("max_size")?,
        channel: r.try_get("channel")?,
        session_id: r.try_get("session_id")?,
        api_key: r.try_get("api_key")?,
        expires_in: r.try_get("expires_in")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        expires_at: r.try_get("expires_at")?,
    })
}

fn participant_from<R: Row>(r: &R) -> Result<Participant, Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let kind: String = r.try_get("kind")?;
    let derived: Option<String> = r.try_get("status_derived")?;
    let status = match derived {
        Some(derived_state) => Some(Status {
            event: r
                .try_get::<Option<String>, _>("status_event")?
                .unwrap_or_default(),
            state: r
                .try_get::<Option<String>, _>("status_state")?
                .unwrap_or_default(),
            connections: r
                .try_get::<Option<i64>, _>("status_connections")?
                .unwrap_or_default(),
            send_streams: r
                .try_get::<Option<i64>, _>("status_send")?
                .unwrap_or_default(),
            recv_streams: r
                .try_get::<Option<i64>, _>("status_recv")?
                .unwrap_or_default(),
            derived_state,
            at: r
                .try_get::<Option<i64>, _>("status_at")?
                .unwrap_or_default(),
        }),
        None => None,
    };
    Ok(Participant {
        room_token: r.try_get("room_token")?,
        participant_hash: r.try_get("participant_hash")?,
        connection_id: r.try_get("connection_id")?,
        user_hash: r.try_get("user_hash")?,
        kind: if kind == "link" {
            Kind::Link
        } else {
            Kind::Hawk
        },
        display_name: r.try_get("display_name")?,
        client_max_size: r.try_get("client_max_size")?,
        role: r.try_get("role")?,
        joined_at: r.try_get("joined_at")?,
        expires_at: r.try_get("expires_at")?,
        status,
    })
}

macro_rules! room_select {
    ($tail:literal) => {
        concat!(
            "SELECT token, owner_hash, room_name, room_owner, context, max_size, channel, session_id, api_key, expires_in, created_at, updated_at, expires_at FROM rooms ",
            $tail
        )
    };
}

macro_rules! participant_select {
    ($tail:literal) => {
        concat!(
            "SELECT room_token, participant_hash, connection_id, user_hash, kind, display_name, client_max_size, role, joined_at, expires_at, status_event, status_state, status_connections, status_send, status_recv, status_derived, status_at FROM rooms_participants ",
            $tail
        )
    };
}

impl Store {
    /// The rooms tables of the main store.
    pub fn new(s: Storage) -> Self {
        Self { s }
    }

    // ---------- Hawk sessions and push URLs ----------

    /// Stores a new session.
    pub async fn session_create(&self, sess: &Session, now: i64) -> Result<(), Error> {
        let sql = self.s.sql("INSERT INTO rooms_hawk_sessions (id_hash, hawk_key, user_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)");
        with_pool!(self.s, p => sqlx::query(sql).bind(&sess.id_hash).bind(&sess.key).bind(&sess.user_hash)
            .bind(now).bind(sess.expires_at).execute(p).await.map(|_| ()))
    }

    /// A live session.
    pub async fn session(&self, id_hash: &str, now: i64) -> Result<Option<Session>, Error> {
        let sql = self.s.sql("SELECT id_hash, hawk_key, user_hash, expires_at FROM rooms_hawk_sessions WHERE id_hash = ? AND expires_at > ?");
        with_pool!(self.s, p => {
            let row = sqlx::query(sql).bind(id_hash).bind(now).fetch_optional(p).await?;
            row.map(|r| Ok(Session {
                id_hash: r.try_get("id_hash")?,
                key: r.try_get("hawk_key")?,
                user_hash: r.try_get("user_hash")?,
                expires_at: r.try_get("expires_at")?,
            })).transpose()
        })
    }

    /// Slides a session's expiry.
    pub async fn session_touch(&self, id_hash: &str, expires_at: i64) -> Result<(), Error> {
        let sql = self
            .s
            .sql("UPDATE rooms_hawk_sessions SET expires_at = ? WHERE id_hash = ?");
        with_pool!(self.s, p => sqlx::query(sql).bind(expires_at).bind(id_hash).execute(p).await.map(|_| ()))
    }

    /// Deletes a session and its push URLs.
    pub async fn session_delete(&self, id_hash: &str) -> Result<(), Error> {
        let urls = self
            .s
            .sql("DELETE FROM rooms_push_urls WHERE session_hash = ?");
        let sess = self
            .s
            .sql("DELETE FROM rooms_hawk_sessions WHERE id_hash = ?");
        with_pool!(self.s, p => {
            let mut tx = p.begin().await?;
            sqlx::query(urls).bind(id_hash).execute(&mut *tx).await?;
            sqlx::query(sess).bind(id_hash).execute(&mut *tx).await?;
            tx.commit().await
        })
    }

    /// Sets a session's push URL for each `(topic, url)`.
    pub async fn push_set(
        &self,
        session_hash: &str,
        user_hash: &str,
        urls: &[(String, String)],
    ) -> Result<(), Error> {
        const DEL: &str = "DELETE FROM rooms_push_urls WHERE session_hash = ? AND topic = ?";
        const INS: &str =
            "INSERT INTO rooms_push_urls (session_hash, topic, user_hash, url) VALUES (?, ?, ?, ?)";
        with_pool!(self.s, p => {
            let mut tx = p.begin().await?;
            for (topic, url) in urls {
                sqlx::query(self.s.sql(DEL)).bind(session_hash).bind(topic).execute(&mut *tx).await?;
                sqlx::query(self.s.sql(INS)).bind(session_hash).bind(topic).bind(user_hash).bind(url).execute(&mut *tx).await?;
            }
            tx.commit().await
        })
    }

    /// Forgets a session's push URLs.
    pub async fn push_delete(&self, session_hash: &str) -> Result<(), Error> {
        let sql = self
            .s
            .sql("DELETE FROM rooms_push_urls WHERE session_hash = ?");
        with_pool!(self.s, p => sqlx::query(sql).bind(session_hash).execute(p).await.map(|_| ()))
    }

    /// The distinct `rooms` push URLs of every device of a user.
    pub async fn push_urls(&self, user_hash: &str) -> Result<Vec<String>, Error> {
        let sql = self.s.sql(
            "SELECT DISTINCT url FROM rooms_push_urls WHERE user_hash = ? AND topic = 'rooms'",
        );
        with_pool!(self.s, p => {
            let rows = sqlx::query(sql).bind(user_hash).fetch_all(p).await?;
            rows.iter().map(|r| r.try_get::<String, _>("url")).collect()
        })
    }

    // ---------- rooms ----------

    /// Stores a new room.
    pub async fn room_insert(&self, r: &Room) -> Result<(), Error> {
        let sql = self.s.sql("INSERT INTO rooms (token, owner_hash, room_name, room_owner, context, max_size, channel, session_id, api_key, expires_in, created_at, updated_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
        with_pool!(self.s, p => sqlx::query(sql).bind(&r.token).bind(&r.owner_hash).bind(&r.room_name).bind(&r.room_owner)
            .bind(&r.context).bind(r.max_size).bind(&r.channel).bind(&r.session_id).bind(&r.api_key).bind(r.expires_in)
            .bind(r.created_at).bind(r.updated_at).bind(r.expires_at).execute(p).await.map(|_| ()))
    }

    /// A live room.
    pub async fn room(&self, token: &str, now: i64) -> Result<Option<Room>, Error> {
        let sql = self
            .s
            .sql(room_select!("WHERE token = ? AND expires_at > ?"));
        with_pool!(self.s, p => {
            let row = sqlx::query(sql).bind(token).bind(now).fetch_optional(p).await?;
            row.map(|r| room_from(&r)).transpose()
        })
    }

    /// Every live room (admin), newest first, at most `limit`.
    pub async fn rooms_all(&self, now: i64, limit: i64) -> Result<Vec<Room>, Error> {
        let sql = self.s.sql(room_select!(
            "WHERE expires_at > ? ORDER BY created_at DESC LIMIT ?"
        ));
        with_pool!(self.s, p => {
            let rows = sqlx::query(sql).bind(now).bind(limit).fetch_all(p).await?;
            rows.iter().map(room_from).collect()
        })
    }

    /// The live rooms of an owner, least recently changed (`ctime`) first, as loop-server sorts them.
    pub async fn rooms_of(&self, owner_hash: &str, now: i64) -> Result<Vec<Room>, Error> {
        let sql = self.s.sql(room_select!(
            "WHERE owner_hash = ? AND expires_at > ? ORDER BY updated_at, created_at, token"
        ));
        with_pool!(self.s, p => {
            let rows = sqlx::query(sql).bind(owner_hash).bind(now).fetch_all(p).await?;
            rows.iter().map(room_from).collect()
        })
    }

    /// Writes a room's changeable fields.
    pub async fn room_update(&self, r: &Room) -> Result<bool, Error> {
        let sql = self.s.sql("UPDATE rooms SET room_name = ?, room_owner = ?, context = ?, max_size = ?, session_id = ?, api_key = ?, expires_in = ?, updated_at = ?, expires_at = ? WHERE token = ?");
        with_pool!(self.s, p => sqlx::query(sql).bind(&r.room_name).bind(&r.room_owner).bind(&r.context).bind(r.max_size)
            .bind(&r.session_id).bind(&r.api_key).bind(r.expires_in).bind(r.updated_at).bind(r.expires_at).bind(&r.token)
            .execute(p).await.map(|x| x.rows_affected() > 0))
    }

    /// Moves `ctime` to now and the expiry to `expires_at` (join, leave, participant expiry).
    pub async fn room_touch(&self, token: &str, now: i64, expires_at: i64) -> Result<bool, Error> {
        let sql = self.s.sql(
            "UPDATE rooms SET updated_at = ?, expires_at = ? WHERE token = ? AND expires_at > ?",
        );
        with_pool!(self.s, p => sqlx::query(sql).bind(now).bind(expires_at).bind(token).bind(now)
            .execute(p).await.map(|x| x.rows_affected() > 0))
    }

    /// Deletes rooms with their participants; with `tombstone_owner`, writes their tombstones dated `now`.
    /// Returns the participants that were still there.
    pub async fn rooms_delete(
        &self,
        tokens: &[String],
        tombstone_owner: Option<&str>,
        now: i64,
    ) -> Result<Vec<Participant>, Error> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        const SELECT: &str = participant_select!("WHERE room_token = ?");
        const DEL_P: &str = "DELETE FROM rooms_participants WHERE room_token = ?";
        const DEL_R: &str = "DELETE FROM rooms WHERE token = ?";
        const DEL_T: &str = "DELETE FROM rooms_tombstones WHERE owner_hash = ? AND room_token = ?";
        const INS_T: &str =
            "INSERT INTO rooms_tombstones (owner_hash, room_token, deleted_at) VALUES (?, ?, ?)";
        // Read first, outside the write transaction (see `participant_put`).
        let mut gone = Vec::new();
        for token in tokens {
            let rows = with_pool!(self.s, p => {
                let rows = sqlx::query(self.s.sql(SELECT)).bind(token).fetch_all(p).await?;
                rows.iter().map(participant_from).collect::<Result<Vec<_>, Error>>()
            })?;
            gone.extend(rows);
        }
        with_pool!(self.s, p => {
            let mut tx = p.begin().await?;
            for token in tokens {
                sqlx::query(self.s.sql(DEL_P)).bind(token).execute(&mut *tx).await?;
                sqlx::query(self.s.sql(DEL_R)).bind(token).execute(&mut *tx).await?;
                if let Some(owner) = tombstone_owner {
                    sqlx::query(self.s.sql(DEL_T)).bind(owner).bind(token).execute(&mut *tx).await?;
                    sqlx::query(self.s.sql(INS_T)).bind(owner).bind(token).bind(now).execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            Ok(gone)
        })
    }

    /// Tokens of an owner's rooms deleted at or after `since` (unix ms).
    pub async fn tombstones(&self, owner_hash: &str, since: i64) -> Result<Vec<String>, Error> {
        let sql = self.s.sql("SELECT room_token FROM rooms_tombstones WHERE owner_hash = ? AND deleted_at >= ? ORDER BY deleted_at, room_token");
        with_pool!(self.s, p => {
            let rows = sqlx::query(sql).bind(owner_hash).bind(since).fetch_all(p).await?;
            rows.iter().map(|r| r.try_get::<String, _>("room_token")).collect()
        })
    }

    // ---------- participants ----------

    /// The live participants of a room, in join order.
    pub async fn participants(&self, token: &str, now: i64) -> Result<Vec<Participant>, Error> {
        let sql = self.s.sql(participant_select!(
            "WHERE room_token = ? AND expires_at > ? ORDER BY joined_at, connection_id"
        ));
        with_pool!(self.s, p => {
            let rows = sqlx::query(sql).bind(token).bind(now).fetch_all(p).await?;
            rows.iter().map(participant_from).collect()
        })
    }

    /// The live participants of several rooms.
    pub async fn participants_of(
        &self,
        tokens: &[String],
        now: i64,
    ) -> Result<Vec<Participant>, Error> {
        let mut out = Vec::new();
        for chunk in tokens.chunks(500) {
            let sql = self.s.sql_list(
                participant_select!("WHERE expires_at > ? AND room_token IN ("),
                chunk.len(),
                ") ORDER BY joined_at, connection_id",
            );
            let rows = with_pool!(self.s, p => {
                let mut q = sqlx::query(sql).bind(now);
                for t in chunk {
                    q = q.bind(t);
                }
                let rows = q.fetch_all(p).await?;
                rows.iter().map(participant_from).collect::<Result<Vec<_>, Error>>()
            })?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// One live participant.
    pub async fn participant(
        &self,
        token: &str,
        participant_hash: &str,
        now: i64,
    ) -> Result<Option<Participant>, Error> {
        let sql = self.s.sql(participant_select!(
            "WHERE room_token = ? AND participant_hash = ? AND expires_at > ?"
        ));
        with_pool!(self.s, p => {
            let row = sqlx::query(sql).bind(token).bind(participant_hash).bind(now).fetch_optional(p).await?;
            row.map(|r| participant_from(&r)).transpose()
        })
    }

    /// A join as one transaction, so concurrent joins cannot both take a room's last slot: touch the room
    /// first (ctime = `now`, expiry `room_expires`; that write locks the room: the row in PostgreSQL and
    /// MySQL, the database in SQLite), read its live participants, let `check` refuse, then put the
    /// participant (replacing the same session's or token's entry). `Ok(Err(e))`: refused, nothing
    /// changed; `Ok(Ok(None))`: the room is gone; `Ok(Ok(Some(replaced)))`: joined, with the earlier entry
    /// if it was still live.
    pub async fn join<E>(
        &self,
        x: &Participant,
        now: i64,
        room_expires: i64,
        check: impl FnOnce(&[Participant]) -> Result<(), E>,
    ) -> Result<Result<Option<Option<Participant>>, E>, Error> {
        const TOUCH: &str =
            "UPDATE rooms SET updated_at = ?, expires_at = ? WHERE token = ? AND expires_at > ?";
        const LIVE: &str = participant_select!(
            "WHERE room_token = ? AND expires_at > ? ORDER BY joined_at, connection_id"
        );
        const DEL: &str =
            "DELETE FROM rooms_participants WHERE room_token = ? AND participant_hash = ?";
        const INS: &str = "INSERT INTO rooms_participants (room_token, participant_hash, connection_id, user_hash, kind, display_name, client_max_size, role, joined_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
        with_pool!(self.s, p => {
            let mut tx = p.begin().await?;
            let touched = sqlx::query(self.s.sql(TOUCH)).bind(now).bind(room_expires).bind(&x.room_token).bind(now)
                .execute(&mut *tx).await?.rows_affected();
            if touched == 0 {
                tx.rollback().await?;
                return Ok(Ok(None));
            }
            let rows = sqlx::query(self.s.sql(LIVE)).bind(&x.room_token).bind(now).fetch_all(&mut *tx).await?;
            let live = rows.iter().map(participant_from).collect::<Result<Vec<_>, Error>>()?;
            if let Err(e) = check(&live) {
                tx.rollback().await?;
                return Ok(Err(e));
            }
            let old = live.into_iter().find(|o| o.participant_hash == x.participant_hash);
            sqlx::query(self.s.sql(DEL)).bind(&x.room_token).bind(&x.participant_hash).execute(&mut *tx).await?;
            sqlx::query(self.s.sql(INS)).bind(&x.room_token).bind(&x.participant_hash).bind(&x.connection_id).bind(&x.user_hash)
                .bind(x.kind.as_str()).bind(&x.display_name).bind(x.client_max_size).bind(&x.role).bind(x.joined_at)
                .bind(x.expires_at).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(Ok(Some(old)))
        })
    }

    /// Adds a participant, replacing the same session's or token's earlier entry (a rejoin). Returns the
    /// replaced entry if it was still live.
    pub async fn participant_put(
        &self,
        x: &Participant,
        now: i64,
    ) -> Result<Option<Participant>, Error> {
        let select = self.s.sql(participant_select!(
            "WHERE room_token = ? AND participant_hash = ?"
        ));
        let del = self
            .s
            .sql("DELETE FROM rooms_participants WHERE room_token = ? AND participant_hash = ?");
        let ins = self.s.sql("INSERT INTO rooms_participants (room_token, participant_hash, connection_id, user_hash, kind, display_name, client_max_size, role, joined_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
        // Read before the transaction: a SQLite transaction that reads first cannot take the write lock
        // when another writer committed meanwhile (SQLITE_BUSY_SNAPSHOT, no busy wait), and the earlier
        // entry only feeds the `left` event.
        let old = with_pool!(self.s, p => {
            let old = sqlx::query(select).bind(&x.room_token).bind(&x.participant_hash).fetch_optional(p).await?;
            old.map(|r| participant_from(&r)).transpose()
        })?;
        with_pool!(self.s, p => {
            let mut tx = p.begin().await?;
            sqlx::query(del).bind(&x.room_token).bind(&x.participant_hash).execute(&mut *tx).await?;
            sqlx::query(ins).bind(&x.room_token).bind(&x.participant_hash).bind(&x.connection_id).bind(&x.user_hash)
                .bind(x.kind.as_str()).bind(&x.display_name).bind(x.client_max_size).bind(&x.role).bind(x.joined_at)
                .bind(x.expires_at).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(old.filter(|o| o.expires_at > now))
        })
    }

    /// Extends a live participant's expiry; false if it is gone or expired.
    pub async fn participant_touch(
        &self,
        token: &str,
        participant_hash: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool, Error> {
        let sql = self.s.sql("UPDATE rooms_participants SET expires_at = ? WHERE room_token = ? AND participant_hash = ? AND expires_at > ?");
        with_pool!(self.s, p => sqlx::query(sql).bind(expires_at).bind(token).bind(participant_hash).bind(now)
            .execute(p).await.map(|x| x.rows_affected() > 0))
    }

    /// Records a live participant's status; false if it is gone or expired.
    pub async fn participant_status(
        &self,
        token: &str,
        participant_hash: &str,
        st: &Status,
        now: i64,
    ) -> Result<bool, Error> {
        let sql = self.s.sql("UPDATE rooms_participants SET status_event = ?, status_state = ?, status_connections = ?, status_send = ?, status_recv = ?, status_derived = ?, status_at = ? WHERE room_token = ? AND participant_hash = ? AND expires_at > ?");
        with_pool!(self.s, p => sqlx::query(sql).bind(&st.event).bind(&st.state).bind(st.connections).bind(st.send_streams)
            .bind(st.recv_streams).bind(&st.derived_state).bind(st.at).bind(token).bind(participant_hash).bind(now)
            .execute(p).await.map(|x| x.rows_affected() > 0))
    }

    /// Removes a participant; true if there was one.
    pub async fn participant_delete(
        &self,
        token: &str,
        participant_hash: &str,
    ) -> Result<bool, Error> {
        let sql = self
            .s
            .sql("DELETE FROM rooms_participants WHERE room_token = ? AND participant_hash = ?");
        with_pool!(self.s, p => sqlx::query(sql).bind(token).bind(participant_hash)
            .execute(p).await.map(|x| x.rows_affected() > 0))
    }

    // ---------- sweeping ----------

    /// Deletes up to `limit` participants expired before `now` and returns them.
    pub async fn sweep_participants(
        &self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<Participant>, Error> {
        let select = self.s.sql(participant_select!(
            "WHERE expires_at <= ? ORDER BY expires_at LIMIT ?"
        ));
        const DEL: &str = "DELETE FROM rooms_participants WHERE room_token = ? AND participant_hash = ? AND expires_at <= ?";
        let found = with_pool!(self.s, p => {
            let rows = sqlx::query(select).bind(now).bind(limit).fetch_all(p).await?;
            rows.iter().map(participant_from).collect::<Result<Vec<_>, Error>>()
        })?;
        let mut gone = Vec::with_capacity(found.len());
        for x in found {
            let n = with_pool!(self.s, p => sqlx::query(self.s.sql(DEL)).bind(&x.room_token).bind(&x.participant_hash).bind(now)
                .execute(p).await.map(|r| r.rows_affected()))?;
            // Another node (or a rejoin) may have got there first: report only what this call deleted.
            if n > 0 {
                gone.push(x);
            }
        }
        Ok(gone)
    }

    /// Deletes up to `limit` rooms expired before `now` (with their participants) and returns them.
    pub async fn sweep_rooms(&self, now: i64, limit: i64) -> Result<Vec<Room>, Error> {
        let select = self.s.sql(room_select!(
            "WHERE expires_at <= ? ORDER BY expires_at LIMIT ?"
        ));
        const DEL_P: &str = "DELETE FROM rooms_participants WHERE room_token = ?";
        const DEL_R: &str = "DELETE FROM rooms WHERE token = ? AND expires_at <= ?";
        let found = with_pool!(self.s, p => {
            let rows = sqlx::query(select).bind(now).bind(limit).fetch_all(p).await?;
            rows.iter().map(room_from).collect::<Result<Vec<_>, Error>>()
        })?;
        let mut gone = Vec::with_capacity(found.len());
        for r in found {
            let n = with_pool!(self.s, p => {
                let mut tx = p.begin().await?;
                let n = sqlx::query(self.s.sql(DEL_R)).bind(&r.token).bind(now).execute(&mut *tx).await?.rows_affected();
                if n > 0 {
                    sqlx::query(self.s.sql(DEL_P)).bind(&r.token).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok::<u64, Error>(n)
            })?;
            if n > 0 {
                gone.push(r);
            }
        }
        Ok(gone)
    }

    /// Deletes tombstones older than `before`, sessions expired before `now` (with their push URLs).
    pub async fn sweep_rest(&self, now: i64, tombstones_before: i64) -> Result<(), Error> {
        let t = self
            .s
            .sql("DELETE FROM rooms_tombstones WHERE deleted_at < ?");
        let urls = self.s.sql("DELETE FROM rooms_push_urls WHERE session_hash IN (SELECT id_hash FROM rooms_hawk_sessions WHERE expires_at <= ?)");
        let sess = self
            .s
            .sql("DELETE FROM rooms_hawk_sessions WHERE expires_at <= ?");
        with_pool!(self.s, p => {
            sqlx::query(t).bind(tombstones_before).execute(p).await?;
            sqlx::query(urls).bind(now).execute(p).await?;
            sqlx::query(sess).bind(now).execute(p).await?;
            Ok(())
        })
    }

    /// A live participant by `roomConnectionId`.
    pub async fn participant_by_connection(
        &self,
        token: &str,
        connection_id: &str,
        now: i64,
    ) -> Result<Option<Participant>, Error> {
        let sql = self.s.sql(participant_select!(
            "WHERE room_token = ? AND connection_id = ? AND expires_at > ?"
        ));
        with_pool!(self.s, p => {
            let row = sqlx::query(sql).bind(token).bind(connection_id).bind(now).fetch_optional(p).await?;
            row.map(|r| participant_from(&r)).transpose()
        })
    }
}
