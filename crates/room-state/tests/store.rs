//! The rooms store on the three real backends (loop-server's `storage_test.js` room cases as Rust tests):
//! rooms, participants with expiry and status, rejoins, tombstones, sessions and push URLs, sweeping.

use rtcplane_room_state::store::{Kind, Participant, Room, Session, Status, Store};
use rtcplane_storage::testing::TestDb;
use rtcplane_storage::{ConnectOptions, Storage};

async fn store(db: &TestDb) -> Store {
    let s = Storage::connect(&ConnectOptions::new(&db.url))
        .await
        .expect("connects");
    s.migrate().await.expect("migrates");
    Store::new(s)
}

fn room(token: &str, owner: &str, now: i64) -> Room {
    Room {
        token: token.into(),
        owner_hash: owner.into(),
        room_name: Some("UX".into()),
        room_owner: "Alexis".into(),
        context: None,
        max_size: 3,
        channel: "default".into(),
        session_id: "sid".into(),
        api_key: "key".into(),
        expires_in: 10,
        created_at: now,
        updated_at: now,
        expires_at: now + 36_000_000,
    }
}

fn participant(token: &str, hash: &str, id: &str, now: i64, ttl: i64) -> Participant {
    Participant {
        room_token: token.into(),
        participant_hash: hash.into(),
        connection_id: id.into(),
        user_hash: Some(hash.into()),
        kind: Kind::Hawk,
        display_name: "Natim".into(),
        client_max_size: 2,
        role: "publisher".into(),
        joined_at: now,
        expires_at: now + ttl,
        status: None,
    }
}

#[tokio::test]
async fn rooms_participants_and_expiry_on_every_backend() {
    for db in TestDb::all().await {
        let b = db.backend;
        let st = store(&db).await;
        let now = 1_700_000_000_000_i64;
        st.room_insert(&room("tokA", "owner", now))
            .await
            .expect("insert");
        st.room_insert(&room("tokB", "owner", now + 1))
            .await
            .expect("insert");
        assert_eq!(
            st.room("tokA", now).await.expect("get"),
            Some(room("tokA", "owner", now)),
            "{b:?}"
        );
        assert_eq!(
            st.room("tokA", now + 36_000_000).await.expect("get"),
            None,
            "{b:?}: expired"
        );
        assert_eq!(st.rooms_of("owner", now).await.expect("list").len(), 2);

        // Participants: put, rejoin replaces, expiry on read, touch, status.
        let p1 = participant(
            "tokA",
            "h1",
            "00000000-0000-4000-8000-000000000001",
            now,
            1000,
        );
        assert_eq!(st.participant_put(&p1, now).await.expect("put"), None);
        let p1b = participant(
            "tokA",
            "h1",
            "00000000-0000-4000-8000-000000000002",
            now,
            1000,
        );
        assert_eq!(
            st.participant_put(&p1b, now).await.expect("rejoin"),
            Some(p1.clone()),
            "{b:?}"
        );
        let mut p2 = participant(
            "tokA",
            "h2",
            "00000000-0000-4000-8000-000000000003",
            now,
            10,
        );
        p2.kind = Kind::Link;
        p2.user_hash = None;
        st.participant_put(&p2, now).await.expect("put");
        assert_eq!(st.participants("tokA", now).await.expect("list").len(), 2);
        assert_eq!(
            st.participants("tokA", now + 10).await.expect("list"),
            vec![p1b.clone()],
            "{b:?}: p2 expired"
        );
        assert!(
            !st.participant_touch("tokA", "h2", now + 10, now + 100)
                .await
                .expect("touch")
        );
        assert!(
            st.participant_touch("tokA", "h1", now, now + 5000)
                .await
                .expect("touch")
        );
        let status = Status {
            event: "Session.connectionCreated".into(),
            state: "sending".into(),
            connections: 2,
            send_streams: 1,
            recv_streams: 0,
            derived_state: "sending".into(),
            at: now,
        };
        assert!(
            st.participant_status("tokA", "h1", &status, now)
                .await
                .expect("status")
        );
        let got = st
            .participant("tokA", "h1", now + 2000)
            .await
            .expect("get")
            .expect("live after touch");
        assert_eq!(got.status, Some(status), "{b:?}");
        assert_eq!(
            st.participants_of(&["tokA".into(), "tokB".into()], now)
                .await
                .expect("of")
                .len(),
            2
        );

        // The sweeper takes expired participants once, then expired rooms.
        let gone = st.sweep_participants(now + 20, 100).await.expect("sweep");
        assert_eq!(gone.len(), 1, "{b:?}");
        assert_eq!(gone[0].participant_hash, "h2");
        assert!(
            st.sweep_participants(now + 20, 100)
                .await
                .expect("sweep")
                .is_empty()
        );
        assert!(
            st.room_touch("tokA", now + 30, now + 40_000_000)
                .await
                .expect("touch")
        );
        let gone = st.sweep_rooms(now + 36_000_001, 100).await.expect("sweep");
        assert_eq!(
            gone.iter().map(|r| r.token.as_str()).collect::<Vec<_>>(),
            ["tokB"],
            "{b:?}"
        );

        // Delete with a tombstone.
        let left = st
            .rooms_delete(&["tokA".into()], Some("owner"), now + 50)
            .await
            .expect("delete");
        assert_eq!(left.len(), 1, "{b:?}");
        assert_eq!(st.room("tokA", now + 60).await.expect("get"), None);
        assert_eq!(st.tombstones("owner", now + 50).await.expect("t"), ["tokA"]);
        assert!(
            st.tombstones("owner", now + 51)
                .await
                .expect("t")
                .is_empty()
        );
        st.sweep_rest(now + 60, now + 60).await.expect("sweep");
        assert!(
            st.tombstones("owner", 0).await.expect("t").is_empty(),
            "{b:?}"
        );

        // Sessions and push URLs.
        let sess = Session {
            id_hash: "idh".into(),
            key: "k".repeat(64),
            user_hash: "idh".into(),
            expires_at: now + 1000,
        };
        st.session_create(&sess, now).await.expect("session");
        assert!(st.session("idh", now).await.expect("get").is_some());
        st.push_set(
            "idh",
            "idh",
            &[
                ("rooms".into(), "http://a".into()),
                ("calls".into(), "http://c".into()),
            ],
        )
        .await
        .expect("push");
        st.push_set("idh", "idh", &[("rooms".into(), "http://b".into())])
            .await
            .expect("push again");
        assert_eq!(
            st.push_urls("idh").await.expect("urls"),
            ["http://b"],
            "{b:?}"
        );
        st.sweep_rest(now + 1000, 0).await.expect("sweep");
        assert!(
            st.session("idh", now).await.expect("get").is_none(),
            "{b:?}: expired session swept"
        );
        assert!(st.push_urls("idh").await.expect("urls").is_empty());
    }
}
