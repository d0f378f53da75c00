//! The store's one suite, run against both backends: every scenario below runs on SQLite (a file in a temporary
//! directory) and on PostgreSQL when `DRY_NEEDLING_CDS_TEST_POSTGRES_URL` is set (each test in its own schema,
//! dropped at the end). Without the URL the PostgreSQL half says so and passes, unless `CI` is set: then it
//! fails, so CI cannot skip it silently. `scripts/postgres start` prints a URL for a throwaway server.
//!
//! Expected numbers are written from the data sets by hand, not read back from a run.

mod common;

use common::store::{Fixture, TempDir, on_both_backends, postgres_not_run, unique};
use dry_needling_cds::store::{
    Analytics, CardRecord, FeedbackOutcome, FeedbackRecord, Outcome, Pruned, ReasonCount, SCHEMA_VERSION, Store,
    StoreConfig, StoreError, TemplateStats, VersionStats, WeekStats, WeekTotal,
};

use time::macros::{date, datetime};
use time::{Duration, OffsetDateTime};

const SIGN: &str = "dry-needling-order-sign";
const SELECT: &str = "dry-needling-order-select";
const NECK: &str = "neck-pain-prefer-manual-therapy";
const BACK: &str = "chronic-low-back-not-recommended";
const REASONS: &str = "http://example.org/override-reasons";
const VERSION: &str = "2026.12.0+0123456789ab";

on_both_backends!(
    migrations_once_and_reopen_is_a_no_op,
    cards_batch,
    feedback_idempotent,
    unknown_card_kept_and_flagged,
    analytics_known_data_set,
    weekly_trend_across_a_year_end,
    prune_by_retention,
    jti_fresh_replay_expired,
    jti_race_across_two_instances,
    no_patient_identifier_in_the_schema,
    text_capped_and_nul_free,
    concurrent_first_opens,
    runs_ended_without_a_clean_shutdown_are_reported_once,
    analytics_by_content_version,
);

// ---------------------------------------------------------------------------------------------------------
// Builders.

fn card(uuid: &str, service: &str, template: &str, issued_at: OffsetDateTime) -> CardRecord {
    CardRecord {
        uuid: uuid.into(),
        service_id: service.into(),
        card: template.into(),
        indicator: "warning".into(),
        stance: "prefer_alternative".into(),
        suggestion_uuids: vec![format!("{uuid}-s1")],
        issued_at,
        client_issuer: Some("https://ehr.example.org".into()),
        tenant: None,
        hook_instance: format!("hook-{uuid}"),
        content_version: Some(VERSION.into()),
    }
}

fn version(service: &str, card: &str, content_version: Option<&str>, counts: [u64; 4]) -> VersionStats {
    VersionStats {
        service_id: service.into(),
        card: card.into(),
        content_version: content_version.map(String::from),
        shown: counts[0],
        accepted: counts[1],
        overridden: counts[2],
        no_feedback: counts[3],
    }
}

fn accepted(card_uuid: &str, at: OffsetDateTime) -> FeedbackRecord {
    FeedbackRecord {
        card_uuid: card_uuid.into(),
        service_id: SIGN.into(),
        outcome: Outcome::Accepted,
        accepted_suggestions: vec![format!("{card_uuid}-s1")],
        override_reason_code: None,
        override_reason_system: None,
        user_comment: None,
        outcome_at: at,
        received_at: at + Duration::seconds(2),
        client_issuer: Some("https://ehr.example.org".into()),
    }
}

fn overridden(card_uuid: &str, at: OffsetDateTime, reason: Option<&str>) -> FeedbackRecord {
    FeedbackRecord {
        outcome: Outcome::Overridden,
        accepted_suggestions: Vec::new(),
        override_reason_code: reason.map(str::to_string),
        override_reason_system: reason.map(|_| REASONS.to_string()),
        ..accepted(card_uuid, at)
    }
}

fn reason(code: Option<&str>, count: u64) -> ReasonCount {
    ReasonCount {
        system: code.map(|_| REASONS.to_string()),
        code: code.map(str::to_string),
        count,
    }
}

// ---------------------------------------------------------------------------------------------------------
// Scenarios.

async fn migrations_once_and_reopen_is_a_no_op(fx: &Fixture) {
    // The fixture has opened (and so migrated) the store once already for SQLite; open twice more.
    let store = fx.open().await;
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    assert_eq!(fx.count("SELECT COUNT(*) FROM _sqlx_migrations").await, SCHEMA_VERSION);
    store.ping().await.expect("ping");
    let c = card("m1", SIGN, NECK, datetime!(2026-03-02 10:00 UTC));
    assert_eq!(store.insert_cards(std::slice::from_ref(&c)).await.unwrap(), 1);
    store.close().await;

    let again = fx.open().await;
    assert_eq!(again.schema_version().await.unwrap(), SCHEMA_VERSION);
    assert_eq!(
        fx.count("SELECT COUNT(*) FROM _sqlx_migrations").await,
        SCHEMA_VERSION,
        "nothing re-applied"
    );
    assert_eq!(fx.count("SELECT COUNT(*) FROM cards").await, 1, "data kept");
    assert_eq!(again.insert_cards(&[c]).await.unwrap(), 0, "the card is still there");
}

async fn cards_batch(fx: &Fixture) {
    let store = fx.open().await;
    let t = datetime!(2026-03-02 10:00 UTC);
    let batch: Vec<CardRecord> = (0..250).map(|i| card(&format!("c{i}"), SIGN, NECK, t)).collect();
    assert_eq!(store.insert_cards(&batch).await.unwrap(), 250);
    assert_eq!(fx.count("SELECT COUNT(*) FROM cards").await, 250);
    // A retried batch with one new card: only the new one is inserted.
    let mut retry = batch[..10].to_vec();
    retry.push(card("c-new", SIGN, NECK, t));
    assert_eq!(store.insert_cards(&retry).await.unwrap(), 1);
    assert_eq!(store.insert_cards(&[]).await.unwrap(), 0);
    assert_eq!(fx.count("SELECT COUNT(*) FROM cards").await, 251);
    assert_eq!(
        fx.text("SELECT suggestion_uuids FROM cards WHERE uuid = 'c7'").await,
        vec![r#"["c7-s1"]"#.to_string()]
    );
    assert_eq!(
        fx.count("SELECT issued_at_ms FROM cards WHERE uuid = 'c7'").await,
        t.unix_timestamp() * 1000
    );
}

async fn feedback_idempotent(fx: &Fixture) {
    let store = fx.open().await;
    let t = datetime!(2026-03-02 10:00 UTC);
    store.insert_cards(&[card("f1", SIGN, NECK, t)]).await.unwrap();
    let item = accepted("f1", t + Duration::minutes(1));

    // The same item twice in one batch: stored once.
    let first = store.insert_feedback(&[item.clone(), item.clone()]).await.unwrap();
    assert_eq!(
        first,
        FeedbackOutcome {
            stored: 1,
            duplicates: 1,
            unknown_cards: 0
        }
    );
    // Sent again later (an EHR's retry), received at another time: still a duplicate.
    let retry = FeedbackRecord {
        received_at: item.received_at + Duration::minutes(5),
        ..item.clone()
    };
    let second = store.insert_feedback(&[retry]).await.unwrap();
    assert_eq!((second.stored, second.duplicates), (0, 1));
    // The same instant written with another offset is the same item.
    let same_instant = FeedbackRecord {
        outcome_at: (t + Duration::minutes(1)).to_offset(time::macros::offset!(+1)),
        ..item.clone()
    };
    assert_eq!(store.insert_feedback(&[same_instant]).await.unwrap().duplicates, 1);
    // Another action on the same card (a later time, or the other outcome at the same time) is new.
    let later = accepted("f1", t + Duration::minutes(2));
    let other = overridden("f1", t + Duration::minutes(1), Some("patient-preference"));
    let third = store.insert_feedback(&[later, other]).await.unwrap();
    assert_eq!((third.stored, third.duplicates), (2, 0));
    assert_eq!(fx.count("SELECT COUNT(*) FROM feedback").await, 3);
    assert_eq!(store.insert_feedback(&[]).await.unwrap(), FeedbackOutcome::default());
}

async fn unknown_card_kept_and_flagged(fx: &Fixture) {
    let store = fx.open().await;
    let t = datetime!(2026-03-03 09:00 UTC);
    store.insert_cards(&[card("known", SIGN, NECK, t)]).await.unwrap();
    let outcome = store
        .insert_feedback(&[
            accepted("known", t + Duration::minutes(1)),
            overridden("never-issued", t + Duration::minutes(1), Some("other")),
        ])
        .await
        .unwrap();
    assert_eq!(
        outcome,
        FeedbackOutcome {
            stored: 2,
            duplicates: 0,
            unknown_cards: 1
        }
    );
    assert_eq!(fx.count("SELECT COUNT(*) FROM feedback").await, 2, "kept");
    assert_eq!(
        fx.text("SELECT card_uuid FROM feedback WHERE unknown_card = TRUE")
            .await,
        vec!["never-issued".to_string()],
        "flagged"
    );
    let day = |a| store.analytics(datetime!(2026-03-03 00:00 UTC), a);
    assert_eq!(
        day(datetime!(2026-03-04 00:00 UTC))
            .await
            .unwrap()
            .unknown_card_feedback,
        1
    );

    // Its card logged later (a card log behind a queue): no longer unknown, and counted under its template.
    store
        .insert_cards(&[card("never-issued", SIGN, BACK, t)])
        .await
        .unwrap();
    assert_eq!(
        fx.count("SELECT COUNT(*) FROM feedback WHERE unknown_card = TRUE")
            .await,
        0
    );
    let analytics = day(datetime!(2026-03-04 00:00 UTC)).await.unwrap();
    assert_eq!(analytics.unknown_card_feedback, 0);
    assert_eq!(analytics.template(SIGN, BACK).map(|t| t.overridden), Some(1));
}

/// The data set of `analytics_known_data_set` (and of the cross-backend comparison). Window: cards issued in
/// [2026-03-02, 2026-03-16), two ISO weeks (Mondays 2026-03-02 and 2026-03-09).
async fn load_analytics_data_set(store: &Store) {
    let w1 = datetime!(2026-03-02 00:00 UTC);
    let w2 = datetime!(2026-03-09 00:00 UTC);
    let cards = [
        card("a1", SIGN, NECK, w1 + Duration::hours(10)),
        card("a2", SIGN, NECK, w1 + Duration::days(1)),
        // The last millisecond of week 1 (Sunday 23:59:59.999).
        card("a3", SIGN, NECK, w2 - Duration::milliseconds(1)),
        // The first millisecond of week 2.
        card("a4", SIGN, NECK, w2),
        card("a5", SIGN, NECK, w2 + Duration::days(2)),
        card("a6", SIGN, NECK, w2 + Duration::days(3)),
        card("a7", SIGN, NECK, w2 + Duration::days(4)),
        card("b1", SIGN, BACK, w1 + Duration::days(2)),
        card("b2", SIGN, BACK, w2 + Duration::days(1)),
        card("c1", SELECT, NECK, w1 + Duration::days(3)),
        // Outside the window: the week before, and exactly at its end (the end is excluded).
        card("x1", SIGN, NECK, w1 - Duration::days(3)),
        card("x2", SIGN, NECK, w2 + Duration::days(7)),
    ];
    assert_eq!(store.insert_cards(&cards).await.unwrap(), 12);
    let at = |uuid: &str| cards.iter().find(|c| c.uuid == uuid).map(|c| c.issued_at).unwrap();
    let m = Duration::minutes;
    let feedback = [
        accepted("a1", at("a1") + m(1)),
        accepted("a1", at("a1") + m(1)), // a resend: a duplicate
        overridden("a2", at("a2") + m(1), Some("patient-preference")),
        overridden("a3", at("a3") + m(1), Some("patient-preference")),
        // a4: accepted, then overridden an hour later: the latest (overridden, clinical-judgement) counts.
        accepted("a4", at("a4") + m(1)),
        overridden("a4", at("a4") + m(61), Some("clinical-judgement")),
        // a5: overridden, then accepted: accepted counts, and its override reason does not.
        overridden("a5", at("a5") + m(1), Some("patient-preference")),
        accepted("a5", at("a5") + m(30)),
        // a6: no feedback. a7: overridden without a reason.
        overridden("a7", at("a7") + m(1), None),
        // b2: both outcomes at the same instant: overridden wins.
        accepted("b2", at("b2") + m(5)),
        overridden("b2", at("b2") + m(5), Some("clinical-judgement")),
        accepted("c1", at("c1") + m(1)),
        accepted("x1", at("x1") + m(1)),
        accepted("x2", at("x2") + m(1)),
        // Unknown cards: one received in the window, one before it.
        overridden("ghost-1", w2 + Duration::days(1), Some("other")),
        overridden("ghost-2", w1 - Duration::days(10), Some("other")),
    ];
    let outcome = store.insert_feedback(&feedback).await.unwrap();
    assert_eq!(
        outcome,
        FeedbackOutcome {
            stored: 15,
            duplicates: 1,
            unknown_cards: 2
        }
    );
}

async fn analytics_known_data_set(fx: &Fixture) {
    let store = fx.open().await;
    load_analytics_data_set(&store).await;
    let since = datetime!(2026-03-02 00:00 UTC);
    let until = datetime!(2026-03-16 00:00 UTC);
    let got = store.analytics(since, until).await.unwrap();
    let stats = |service: &str, card: &str, counts: [u64; 4], override_reasons: Vec<ReasonCount>| TemplateStats {
        service_id: service.into(),
        card: card.into(),
        shown: counts[0],
        accepted: counts[1],
        overridden: counts[2],
        no_feedback: counts[3],
        override_reasons,
    };
    let week = |week_start, service: &str, card: &str, shown, accepted, overridden| WeekStats {
        week_start,
        service_id: service.into(),
        card: card.into(),
        shown,
        accepted,
        overridden,
    };
    let expected = Analytics {
        since,
        until,
        templates: vec![
            stats(SELECT, NECK, [1, 1, 0, 0], vec![]),
            stats(SIGN, BACK, [2, 0, 1, 1], vec![reason(Some("clinical-judgement"), 1)]),
            stats(
                SIGN,
                NECK,
                [7, 2, 4, 1],
                vec![
                    reason(Some("patient-preference"), 2),
                    reason(None, 1),
                    reason(Some("clinical-judgement"), 1),
                ],
            ),
        ],
        weekly: vec![
            week(date!(2026 - 03 - 02), SELECT, NECK, 1, 1, 0),
            week(date!(2026 - 03 - 02), SIGN, BACK, 1, 0, 0),
            week(date!(2026 - 03 - 02), SIGN, NECK, 3, 1, 2),
            week(date!(2026 - 03 - 09), SIGN, BACK, 1, 0, 1),
            week(date!(2026 - 03 - 09), SIGN, NECK, 4, 1, 2),
        ],
        // One content version wrote them all: the same counts as the templates'.
        versions: vec![
            version(SELECT, NECK, Some(VERSION), [1, 1, 0, 0]),
            version(SIGN, BACK, Some(VERSION), [2, 0, 1, 1]),
            version(SIGN, NECK, Some(VERSION), [7, 2, 4, 1]),
        ],
        unknown_card_feedback: 1,
    };
    assert_eq!(got, expected);
    assert_eq!(
        got.weekly_totals(),
        vec![
            WeekTotal {
                week_start: date!(2026 - 03 - 02),
                shown: 5,
                accepted: 2,
                overridden: 2
            },
            WeekTotal {
                week_start: date!(2026 - 03 - 09),
                shown: 5,
                accepted: 1,
                overridden: 3
            },
        ]
    );
    assert_eq!(
        got.template(SIGN, NECK).and_then(TemplateStats::override_rate),
        Some(4.0 / 6.0)
    );
    // The next day has only x2 (issued exactly at `until`); the day after, nothing.
    let next = store.analytics(until, until + Duration::days(1)).await.unwrap();
    assert_eq!(next.template(SIGN, NECK).map(|t| (t.shown, t.accepted)), Some((1, 1)));
    let empty = store
        .analytics(until + Duration::days(1), until + Duration::days(2))
        .await
        .unwrap();
    assert!(empty.templates.is_empty() && empty.weekly.is_empty() && empty.unknown_card_feedback == 0);
}

/// Cards of one template written by two content versions, and one logged before versions were recorded: each
/// version counted apart (by the same latest-feedback rule), the template's row over all of them.
async fn analytics_by_content_version(fx: &Fixture) {
    let store = fx.open().await;
    let at = datetime!(2026-03-03 10:00 UTC);
    let (old, new) = ("2026.11.0+aaaaaaaaaaaa", "2026.12.0+bbbbbbbbbbbb");
    let with = |uuid: &str, version: Option<&str>| CardRecord {
        content_version: version.map(String::from),
        ..card(uuid, SIGN, NECK, at)
    };
    store
        .insert_cards(&[
            with("v0", None),
            with("v1", Some(old)),
            with("v2", Some(old)),
            with("v3", Some(old)),
            with("v4", Some(new)),
            with("v5", Some(new)),
        ])
        .await
        .unwrap();
    let later = at + Duration::minutes(5);
    store
        .insert_feedback(&[
            overridden("v0", later, Some("x")),
            overridden("v1", later, Some("x")),
            overridden("v2", later, None),
            accepted("v3", later),
            accepted("v4", later),
            // Overridden, then accepted: the latest counts.
            overridden("v5", later, Some("x")),
            accepted("v5", later + Duration::minutes(1)),
        ])
        .await
        .unwrap();
    let got = store
        .analytics(at - Duration::days(1), at + Duration::days(1))
        .await
        .unwrap();
    assert_eq!(
        got.versions,
        vec![
            version(SIGN, NECK, None, [1, 0, 1, 0]),
            version(SIGN, NECK, Some(old), [3, 1, 2, 0]),
            version(SIGN, NECK, Some(new), [2, 2, 0, 0]),
        ]
    );
    assert_eq!(got.versions[1].override_rate(), Some(2.0 / 3.0));
    assert_eq!(got.versions[2].override_rate(), Some(0.0));
    let template = got.template(SIGN, NECK).unwrap();
    assert_eq!((template.shown, template.accepted, template.overridden), (6, 3, 3));
}

async fn weekly_trend_across_a_year_end(fx: &Fixture) {
    // ISO week 1 of 2026 starts on Monday 2025-12-29.
    let store = fx.open().await;
    let cards = [
        card("y1", SIGN, NECK, datetime!(2025-12-28 23:59:59 UTC)), // Sunday: week of 2025-12-22
        card("y2", SIGN, NECK, datetime!(2025-12-29 00:00 UTC)),
        card("y3", SIGN, NECK, datetime!(2026-01-01 12:00 UTC)), // Thursday
        card("y4", SIGN, NECK, datetime!(2026-01-04 23:59:59.999 UTC)), // Sunday
        card("y5", SIGN, NECK, datetime!(2026-01-05 00:00 UTC)),
    ];
    store.insert_cards(&cards).await.unwrap();
    // Feedback times in another offset change nothing: weeks are by the card's UTC issue time.
    store
        .insert_feedback(&[
            overridden("y3", datetime!(2026-01-01 13:00 +05:00), Some("x")),
            accepted("y5", datetime!(2026-01-05 01:00 UTC)),
        ])
        .await
        .unwrap();
    let got = store
        .analytics(datetime!(2025-12-01 00:00 UTC), datetime!(2026-02-01 00:00 UTC))
        .await
        .unwrap();
    let trend: Vec<(time::Date, u64, u64, u64)> = got
        .weekly_totals()
        .iter()
        .map(|w| (w.week_start, w.shown, w.accepted, w.overridden))
        .collect();
    assert_eq!(
        trend,
        vec![
            (date!(2025 - 12 - 22), 1, 0, 0),
            (date!(2025 - 12 - 29), 3, 0, 1),
            (date!(2026 - 01 - 05), 1, 1, 0),
        ]
    );
}

async fn prune_by_retention(fx: &Fixture) {
    let store = fx.open().await;
    let day = |d: i64| datetime!(2026-03-01 00:00 UTC) + Duration::days(d);
    store
        .insert_cards(&[card("old", SIGN, NECK, day(1)), card("new", SIGN, NECK, day(5))])
        .await
        .unwrap();
    // `accepted` is received 2 s after its outcome time.
    store
        .insert_feedback(&[accepted("old", day(2)), accepted("new", day(6))])
        .await
        .unwrap();
    assert_eq!(store.prune(day(4)).await.unwrap(), Pruned { cards: 1, feedback: 1 });
    assert_eq!(
        store.prune(day(4)).await.unwrap(),
        Pruned::default(),
        "nothing left to prune"
    );
    assert_eq!(fx.text("SELECT uuid FROM cards").await, vec!["new".to_string()]);
    assert_eq!(fx.text("SELECT card_uuid FROM feedback").await, vec!["new".to_string()]);
    let got = store.analytics(day(0), day(10)).await.unwrap();
    assert_eq!(got.template(SIGN, NECK).map(|t| (t.shown, t.accepted)), Some((1, 1)));
    // The cut-off is exclusive: a card issued exactly at it stays.
    assert_eq!(store.prune(day(5)).await.unwrap().cards, 0);
    assert_eq!(store.prune(day(5) + Duration::milliseconds(1)).await.unwrap().cards, 1);
}

async fn jti_fresh_replay_expired(fx: &Fixture) {
    let store = fx.open().await;
    let iss = "https://ehr.example.org";
    assert!(store.remember_jti(iss, "j1", 1000, 100).await.unwrap(), "fresh");
    assert!(!store.remember_jti(iss, "j1", 1000, 200).await.unwrap(), "replay");
    assert!(
        !store.remember_jti(iss, "j1", 1000, 1000).await.unwrap(),
        "replay up to and at its expiry"
    );
    assert!(
        store
            .remember_jti("https://other.example.org", "j1", 1000, 200)
            .await
            .unwrap(),
        "per issuer"
    );
    assert!(store.remember_jti(iss, "j2", 1000, 200).await.unwrap(), "per jti");
    // Expired: reusable, and remembered again until the new expiry.
    assert!(
        store.remember_jti(iss, "j1", 2000, 1001).await.unwrap(),
        "expired counts as absent"
    );
    assert!(
        !store.remember_jti(iss, "j1", 2000, 1500).await.unwrap(),
        "and is remembered again"
    );
    // Nothing of the caller's text is stored: keys are 32-byte hashes.
    assert_eq!(fx.count("SELECT COUNT(*) FROM jti_seen").await, 3);
    assert_eq!(
        fx.count("SELECT CAST(MIN(LENGTH(key)) AS BIGINT) FROM jti_seen").await,
        32
    );
    assert_eq!(store.prune_jtis(1500).await.unwrap(), 2, "the two that expired at 1000");
    assert_eq!(store.prune_jtis(1500).await.unwrap(), 0);
    assert!(
        !store.remember_jti(iss, "j1", 2000, 1600).await.unwrap(),
        "pruning kept the live one"
    );
}

async fn jti_race_across_two_instances(fx: &Fixture) {
    // Two stores (two pools, as two instances would have), 16 tasks each, racing for the same jti.
    let first = fx.open().await;
    let second = fx.open().await;
    for round in 0..5 {
        let jti = format!("race-{round}");
        // Rounds 3 and 4 race to replace an expired entry instead of inserting a new one.
        if round >= 3 {
            assert!(first.remember_jti("iss", &jti, 50, 10).await.unwrap());
        }
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let store = if i % 2 == 0 { first.clone() } else { second.clone() };
                let jti = jti.clone();
                tokio::spawn(async move { store.remember_jti("iss", &jti, 1000, 100).await })
            })
            .collect();
        let mut fresh = 0;
        for task in tasks {
            if task.await.expect("task").expect("remember_jti") {
                fresh += 1;
            }
        }
        assert_eq!(fresh, 1, "round {round}: exactly one of 32 racers is fresh");
    }
}

async fn no_patient_identifier_in_the_schema(fx: &Fixture) {
    // The exact columns: a new one must be added here, on purpose. None identifies a patient: cards are keyed by
    // their own uuid; hook_instance names the call; user_comment is stored only if the caller passes it.
    let expected: Vec<(String, String)> = [
        ("cards", "card"),
        ("cards", "client_issuer"),
        ("cards", "content_version"),
        ("cards", "hook_instance"),
        ("cards", "indicator"),
        ("cards", "issued_at_ms"),
        ("cards", "service_id"),
        ("cards", "stance"),
        ("cards", "suggestion_uuids"),
        ("cards", "tenant"),
        ("cards", "uuid"),
        ("feedback", "accepted_suggestions"),
        ("feedback", "card_uuid"),
        ("feedback", "client_issuer"),
        ("feedback", "outcome"),
        ("feedback", "outcome_at_ms"),
        ("feedback", "override_reason_code"),
        ("feedback", "override_reason_system"),
        ("feedback", "received_at_ms"),
        ("feedback", "service_id"),
        ("feedback", "unknown_card"),
        ("feedback", "user_comment"),
        ("jti_seen", "expires_at"),
        ("jti_seen", "key"),
        ("service_runs", "cards_written"),
        ("service_runs", "clean"),
        ("service_runs", "instance"),
        ("service_runs", "last_write_at_ms"),
        ("service_runs", "run_id"),
        ("service_runs", "started_at_ms"),
        ("service_runs", "stopped_at_ms"),
    ]
    .iter()
    .map(|(t, c)| (t.to_string(), c.to_string()))
    .collect();
    let _store = fx.open().await;
    let columns: Vec<(String, String)> = fx
        .columns()
        .await
        .into_iter()
        .filter(|(table, _)| table != "_sqlx_migrations")
        .collect();
    assert_eq!(columns, expected);
    for (table, column) in &columns {
        for word in ["patient", "subject", "mrn", "encounter", "birth", "fhir"] {
            assert!(!column.contains(word), "{table}.{column}");
        }
    }
}

async fn text_capped_and_nul_free(fx: &Fixture) {
    let store = fx.open().await;
    let t = datetime!(2026-03-02 10:00 UTC);
    let long = "u".repeat(1000);
    let mut c = card(&long, SIGN, NECK, t);
    c.hook_instance = "hook\0instance".into();
    c.suggestion_uuids = (0..100).map(|i| i.to_string()).collect();
    store
        .insert_cards(&[c])
        .await
        .expect("a NUL is no error on either backend");
    assert_eq!(
        fx.text("SELECT hook_instance FROM cards").await,
        vec!["hook\u{FFFD}instance".to_string()]
    );
    assert_eq!(fx.count("SELECT CAST(LENGTH(uuid) AS BIGINT) FROM cards").await, 256);
    let mut f = overridden(&long, t + Duration::minutes(1), Some("r\0"));
    f.user_comment = Some("c".repeat(5000));
    let outcome = store.insert_feedback(&[f]).await.unwrap();
    assert_eq!(
        (outcome.stored, outcome.unknown_cards),
        (1, 0),
        "the capped uuid still finds its card"
    );
    assert_eq!(
        fx.count("SELECT CAST(LENGTH(user_comment) AS BIGINT) FROM feedback")
            .await,
        2000
    );
    assert_eq!(
        fx.text("SELECT override_reason_code FROM feedback").await,
        vec!["r\u{FFFD}".to_string()]
    );
}

async fn concurrent_first_opens(fx: &Fixture) {
    // Instances starting together: each migration applied once, every open succeeds.
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let config = fx.config.clone();
            tokio::spawn(async move { Store::open(&config).await })
        })
        .collect();
    for open in opens {
        let store = open.await.expect("task").expect("open");
        assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    }
    assert_eq!(fx.count("SELECT COUNT(*) FROM _sqlx_migrations").await, SCHEMA_VERSION);
}

// ---------------------------------------------------------------------------------------------------------
// Across backends, and errors.

/// The same data set gives the same analytics on SQLite and PostgreSQL (field by field).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_identical_on_both_backends() {
    let Some(pg) = Fixture::postgres("identical").await else {
        return postgres_not_run();
    };
    let sqlite = Fixture::sqlite("identical").await;
    let (since, until) = (datetime!(2026-01-01 00:00 UTC), datetime!(2026-04-01 00:00 UTC));
    let mut results = Vec::new();
    for fx in [&sqlite, &pg] {
        let store = fx.open().await;
        load_analytics_data_set(&store).await;
        results.push(store.analytics(since, until).await.unwrap());
    }
    assert_eq!(results[0], results[1]);
    assert!(!results[0].templates.is_empty());
    sqlite.finish().await;
    pg.finish().await;
}

/// The schema as release 0.2.0 left it (versions 1 and 2, applied as that release applied them: same texts, so
/// the same checksums), with one card it logged.
fn release_0_2_0_migrator(dialect: &str) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect);
    let migrations = [
        (1, "card log feedback jti", "0001_card_log_feedback_jti.sql"),
        (2, "service runs", "0002_service_runs.sql"),
    ]
    .into_iter()
    .map(|(number, description, file)| {
        let sql = std::fs::read_to_string(root.join(file)).unwrap();
        Migration::new(
            number,
            std::borrow::Cow::Borrowed(description),
            MigrationType::Simple,
            sqlx::AssertSqlSafe(sql).into_sql_str(),
            false,
        )
    })
    .collect();
    sqlx::migrate::Migrator::with_migrations(migrations)
}

const RELEASE_0_2_0_CARD: &str = "INSERT INTO cards (uuid, service_id, card, indicator, stance, suggestion_uuids, \
     issued_at_ms, client_issuer, tenant, hook_instance) \
     VALUES ('old-card', 'dry-needling-order-sign', 'neck-pain-prefer-manual-therapy', 'warning', \
     'prefer_alternative', '[]', 1772532000000, NULL, NULL, 'hook-old')";

/// After the upgrade: the old card is kept, counted as "before content versions", and new cards carry theirs.
async fn upgraded_from_release_0_2_0(store: Store) {
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    store
        .insert_cards(&[card("new-card", SIGN, NECK, datetime!(2026-03-03 10:00 UTC))])
        .await
        .unwrap();
    store
        .insert_feedback(&[overridden("old-card", datetime!(2026-03-03 11:00 UTC), Some("x"))])
        .await
        .unwrap();
    let got = store
        .analytics(datetime!(2026-03-01 00:00 UTC), datetime!(2026-03-08 00:00 UTC))
        .await
        .unwrap();
    assert_eq!(
        got.versions,
        vec![
            version(SIGN, NECK, None, [1, 0, 1, 0]),
            version(SIGN, NECK, Some(VERSION), [1, 0, 0, 1]),
        ]
    );
    assert_eq!(got.unknown_card_feedback, 0, "the old card is still known");
}

#[tokio::test]
async fn sqlite_store_written_by_release_0_2_0_is_upgraded() {
    let dir = TempDir(std::env::temp_dir().join(format!("dncds-store-{}", unique("upgrade"))));
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join("store.sqlite3");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let raw = sqlx::SqlitePool::connect_with(options).await.unwrap();
    release_0_2_0_migrator("sqlite").run(&raw).await.unwrap();
    sqlx::query(RELEASE_0_2_0_CARD).execute(&raw).await.unwrap();
    raw.close().await;
    upgraded_from_release_0_2_0(Store::open(&StoreConfig::Sqlite { path }).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_store_written_by_release_0_2_0_is_upgraded() {
    let Some(fx) = Fixture::postgres("upgrade").await else {
        return postgres_not_run();
    };
    let common::store::Raw::Postgres(raw) = &fx.raw else {
        unreachable!()
    };
    release_0_2_0_migrator("postgres").run(raw).await.unwrap();
    sqlx::query(RELEASE_0_2_0_CARD).execute(raw).await.unwrap();
    upgraded_from_release_0_2_0(fx.open().await).await;
    fx.finish().await;
}

#[tokio::test]
async fn sqlite_open_error_names_the_path() {
    let dir = TempDir(std::env::temp_dir().join(format!("dncds-store-{}", unique("bad"))));
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let config = StoreConfig::Sqlite {
        path: file.join("store.sqlite3"),
    };
    let error = Store::open(&config).await.expect_err("a file is in the way");
    assert!(matches!(error, StoreError::CreateDir { .. }), "{error:?}");
    assert!(error.to_string().contains(&file.display().to_string()), "{error}");
}

#[tokio::test]
async fn postgres_open_error_names_the_host_never_the_password() {
    // No server needed: the socket directory does not exist.
    let config = StoreConfig::Postgres {
        url: "postgres://cds:s3cret-pw@localhost/cds?host=/nonexistent-dncds-socket".into(),
    };
    let started = std::time::Instant::now();
    let error = Store::open(&config).await.expect_err("no server");
    let message = error.to_string();
    assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
    assert!(message.contains("/nonexistent-dncds-socket/cds"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
    assert!(!format!("{error:?}").contains("s3cret"), "{error:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "fails within the acquire time-out"
    );
}

/// A full disk (a SQLite file at its page cap: the same `SQLITE_FULL`) fails writes and marks the store degraded;
/// once space comes back (rows deleted, pages freed), the same store writes again by itself, without a restart.
/// Before: a connection a failed write left inside a transaction stayed in the pool and every later write on it
/// failed until the process restarted.
#[tokio::test]
async fn sqlite_recovers_from_a_full_disk_without_a_restart() {
    let dir = TempDir(std::env::temp_dir().join(format!("dncds-store-{}", unique("full"))));
    let path = dir.0.join("store.sqlite3");
    let config = StoreConfig::Sqlite { path: path.clone() };
    Store::open(&config).await.expect("create").close().await;
    let raw = sqlx::sqlite::SqlitePool::connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&path))
        .await
        .expect("raw connection");
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&raw).await.unwrap();
    let store = Store::open_capped(&config, Some(pages as u64 + 40))
        .await
        .expect("open capped");
    let at = datetime!(2026-11-23 10:00 UTC);
    let mut full = false;
    for n in 0..400 {
        let batch: Vec<CardRecord> = (0..50)
            .map(|i| card(&format!("{:08}-full-{}", n * 50 + i, "x".repeat(200)), "svc", "tpl", at))
            .collect();
        if store.insert_cards(&batch).await.is_err() {
            full = true;
            break;
        }
    }
    assert!(full, "the capped file never filled");
    assert!(store.writes_failing(), "a failed write is reported");
    // Every pooled connection meets the full file: none may be left unusable.
    for k in 0..6 {
        let batch: Vec<CardRecord> = (0..50)
            .map(|i| card(&format!("{:08}-again-{k}-{}", i, "y".repeat(200)), "svc", "tpl", at))
            .collect();
        assert!(store.insert_cards(&batch).await.is_err());
    }
    // Space comes back: the rows are deleted and their pages freed for reuse.
    sqlx::query("DELETE FROM cards").execute(&raw).await.unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&raw)
        .await
        .unwrap();
    for i in 0..8 {
        let stored = store
            .insert_cards(&[card(&format!("after-{i}"), "svc", "tpl", at)])
            .await
            .unwrap_or_else(|e| panic!("write {i} after space came back: {e}"));
        assert_eq!(stored, 1);
    }
    assert!(!store.writes_failing(), "recovered");
    store.close().await;
    raw.close().await;
}

async fn runs_ended_without_a_clean_shutdown_are_reported_once(fx: &Fixture) {
    // kill -9 loses what the card log had queued; the next run of the same instance says so, with what is known.
    let started = datetime!(2026-11-23 10:00 UTC);
    let first = fx.open().await;
    assert_eq!(first.begin_run("host-a:8080", started).await.unwrap(), Vec::new());
    let cards: Vec<_> = (0..3)
        .map(|i| card(&format!("run{i}"), SELECT, NECK, datetime!(2026-11-23 10:01 UTC)))
        .collect();
    first.insert_cards(&cards).await.unwrap();
    // Another instance's open run is not this instance's business.
    let other = fx.open().await;
    assert_eq!(other.begin_run("host-b:8080", started).await.unwrap(), Vec::new());
    // The first process dies without `end_run`; its successor finds its run, once.
    let second = fx.open().await;
    let unclean = second
        .begin_run("host-a:8080", datetime!(2026-11-23 11:00 UTC))
        .await
        .unwrap();
    assert_eq!(unclean.len(), 1, "{unclean:?}");
    assert_eq!(unclean[0].started_at, started);
    assert_eq!(unclean[0].cards_written, 3);
    assert!(unclean[0].last_write_at.is_some_and(|t| t > started));
    // It stops cleanly; the next start has nothing to report.
    second.end_run(datetime!(2026-11-23 12:00 UTC)).await.unwrap();
    let third = fx.open().await;
    assert_eq!(
        third
            .begin_run("host-a:8080", datetime!(2026-11-23 13:00 UTC))
            .await
            .unwrap(),
        Vec::new()
    );
    assert_eq!(
        fx.count("SELECT COUNT(*) FROM service_runs WHERE clean = FALSE").await,
        1,
        "the killed run is recorded as unclean"
    );
    for store in [first, other, second, third] {
        store.close().await;
    }
}
