//! The issue's rules, each as a behaviour run against every backend (see `backends!`).

use airlock_hub::identity::Role;
use airlock_hub::store::{
    GENESIS, IdempotencyKey, Inserted, MemoryStore, Mutation, Note, PgStore, SqliteStore,
    SqliteSync, Store, verify_chain,
};
use airlock_proto::v1::{
    ApprovalRequest, DecisionCause, DecisionsRequest, GrantScope, GroupQuorum, ListRequest,
    RequestState, Requirements, Verdict,
};
use tonic::Code;

use crate::util::{Backend, TestHub, decide, pg, quick_config, submit, with_requirements, within};

async fn hub(b: Backend) -> Option<TestHub> {
    TestHub::on(b, quick_config()).await
}

fn state(r: &ApprovalRequest) -> RequestState {
    RequestState::try_from(r.state).unwrap()
}

pub async fn grant_for_a_duration_covers_only_the_same_action(b: Backend) {
    let Some(hub) = hub(b).await else { return };
    let mut agent = hub.agent("agent-1").await;
    let mut decisions = agent
        .decisions(DecisionsRequest { awaiting: vec![] })
        .await
        .unwrap()
        .into_inner();
    agent.submit(submit("first", "mallory")).await.unwrap();
    let mut bob = hub.approver("bob").await;
    let mut d = decide("first", Verdict::Allow, "");
    d.scope = GrantScope::Duration as i32;
    d.duration_seconds = 3600;
    let approved = bob.decide(d).await.unwrap().into_inner().request.unwrap();
    assert_eq!(state(&approved), RequestState::Approved);
    assert_eq!(within(5, &mut decisions).await.id, "first");

    // Same exact action (same hash), same agent and requester: approved at submit.
    let mut again = submit("second", "mallory");
    again.action.as_mut().unwrap().action_hash = "hash-first".to_owned();
    let covered = agent
        .submit(again.clone())
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(state(&covered), RequestState::Approved);
    let decision = covered.decision.unwrap();
    assert_eq!(decision.cause, DecisionCause::Grant as i32);
    assert_eq!(decision.grant_request_id, "first");
    let event = within(5, &mut decisions).await;
    assert_eq!(
        (event.id.as_str(), event.state),
        ("second", RequestState::Approved as i32),
        "the agent hears the grant's decision on its stream"
    );

    // Another command (another hash), another requester, another agent: new requests.
    let other_cmd = agent
        .submit(submit("third", "mallory"))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(
        state(&other_cmd),
        RequestState::Pending,
        "grant is bound to the hash"
    );
    let mut other_user = again.clone();
    other_user.id = "fourth".to_owned();
    other_user.requester = "trent".to_owned();
    let r = agent
        .submit(other_user)
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(
        state(&r),
        RequestState::Pending,
        "grant is bound to the requester"
    );
    let mut other_agent = again.clone();
    other_agent.id = "fifth".to_owned();
    let r = hub
        .agent("agent-2")
        .await
        .submit(other_agent)
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(
        state(&r),
        RequestState::Pending,
        "grant is bound to the agent"
    );

    // A one-shot approval grants nothing beyond its request.
    agent.submit(submit("once", "mallory")).await.unwrap();
    bob.decide(decide("once", Verdict::Allow, ""))
        .await
        .unwrap();
    let mut repeat = submit("once-again", "mallory");
    repeat.action.as_mut().unwrap().action_hash = "hash-once".to_owned();
    let r = agent
        .submit(repeat)
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(state(&r), RequestState::Pending);
    hub.stop().await;
}

pub async fn quorum_across_groups_with_a_double_voter(b: Backend) {
    let Some(hub) = hub(b).await else { return };
    let rule = Requirements {
        groups: vec![
            GroupQuorum {
                group: "sre".to_owned(),
                min_approvals: 2,
            },
            GroupQuorum {
                group: "sec".to_owned(),
                min_approvals: 1,
            },
        ],
        ..Requirements::default()
    };
    hub.agent("agent-1")
        .await
        .submit(with_requirements(submit("q", "mallory"), rule))
        .await
        .unwrap();
    let vote = |r: Result<tonic::Response<airlock_proto::v1::DecideResponse>, tonic::Status>| {
        state(&r.unwrap().into_inner().request.unwrap())
    };
    let mut alice = hub.approver_as("alice", Role::Approver, &["sre"]).await;
    assert_eq!(
        vote(alice.decide(decide("q", Verdict::Allow, "")).await),
        RequestState::Pending
    );
    // Alice again, and as "ALICE" with more groups (a second credential): still one vote.
    assert_eq!(
        vote(alice.decide(decide("q", Verdict::Allow, "")).await),
        RequestState::Pending
    );
    let mut alice2 = hub.approver_as("ALICE", Role::Admin, &["sre", "sec"]).await;
    assert_eq!(
        vote(alice2.decide(decide("q", Verdict::Allow, "")).await),
        RequestState::Pending
    );
    let err = alice2
        .decide(decide("q", Verdict::Deny, "changed my mind"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "one person, one vote");
    let mut eve = hub.approver_as("eve", Role::Approver, &["web"]).await;
    let err = eve
        .decide(decide("q", Verdict::Allow, ""))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "outside every required group"
    );
    let mut bob = hub.approver_as("bob", Role::Approver, &["sre"]).await;
    assert_eq!(
        vote(bob.decide(decide("q", Verdict::Allow, "")).await),
        RequestState::Pending,
        "sre has 2 of 2, sec still 0 of 1"
    );
    let mut carol = hub.approver_as("carol", Role::Approver, &["sec"]).await;
    let done = carol
        .decide(decide("q", Verdict::Allow, ""))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(state(&done), RequestState::Approved);
    assert_eq!(done.votes.len(), 3);
    hub.stop().await;
}

pub async fn denial_threshold_and_reasons(b: Backend) {
    let Some(hub) = hub(b).await else { return };
    let mut agent = hub.agent("agent-1").await;
    let two_denials = Requirements {
        min_denials: 2,
        reason_required_for_approve: true,
        ..Requirements::default()
    };
    agent
        .submit(with_requirements(submit("d", "mallory"), two_denials))
        .await
        .unwrap();
    let mut alice = hub.approver("alice").await;
    let err = alice
        .decide(decide("d", Verdict::Deny, "  "))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "a denial needs a reason");
    let err = alice
        .decide(decide("d", Verdict::Allow, ""))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "this rule needs approval reasons"
    );
    let r = alice
        .decide(decide("d", Verdict::Deny, "no"))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(
        state(&r),
        RequestState::Pending,
        "the rule wants two denials"
    );
    let r = hub
        .approver("bob")
        .await
        .decide(decide("d", Verdict::Deny, "also no"))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(state(&r), RequestState::Denied);
    assert_eq!(r.decision.unwrap().approvers, ["alice", "bob"]);

    // Default rule: one denial ends it even after an approval vote in a quorum of two.
    let quorum = Requirements {
        groups: vec![GroupQuorum {
            group: "sre".to_owned(),
            min_approvals: 2,
        }],
        ..Requirements::default()
    };
    agent
        .submit(with_requirements(submit("e", "mallory"), quorum))
        .await
        .unwrap();
    let mut a = hub.approver_as("alice", Role::Approver, &["sre"]).await;
    a.decide(decide("e", Verdict::Allow, "")).await.unwrap();
    let mut c = hub.approver_as("carol", Role::Approver, &["sre"]).await;
    let r = c
        .decide(decide("e", Verdict::Deny, "nope"))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(state(&r), RequestState::Denied);
    hub.stop().await;
}

pub async fn agents_never_decide_and_admins_never_self_approve(b: Backend) {
    let Some(hub) = hub(b).await else { return };
    hub.agent("agent-1")
        .await
        .submit(submit("s", "alice"))
        .await
        .unwrap();
    // An agent credential, even one named like an approver, can never vote.
    let mut agent_as_bob = hub.approver_as("bob", Role::Agent, &["sre"]).await;
    let err = agent_as_bob
        .decide(decide("s", Verdict::Allow, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    for (name, role) in [
        ("alice", Role::Admin),
        ("Alice", Role::Approver),
        (" alice ", Role::Admin),
    ] {
        let mut me = hub.approver_as(name, role, &[]).await;
        let err = me
            .decide(decide("s", Verdict::Allow, ""))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{name} as {role}");
    }
    let r = hub
        .approver("bob")
        .await
        .get(airlock_proto::v1::GetRequest { id: "s".to_owned() })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert!(r.votes.is_empty());
    hub.stop().await;
}

pub async fn replayed_decide_is_one_vote(b: Backend) {
    let Some(hub) = hub(b).await else { return };
    let quorum = Requirements {
        groups: vec![GroupQuorum {
            group: "sre".to_owned(),
            min_approvals: 2,
        }],
        ..Requirements::default()
    };
    let mut agent = hub.agent("agent-1").await;
    agent
        .submit(with_requirements(submit("r", "mallory"), quorum))
        .await
        .unwrap();
    agent.submit(submit("r2", "mallory")).await.unwrap();
    let mut alice = hub.approver_as("alice", Role::Approver, &["sre"]).await;
    let mut d = decide("r", Verdict::Allow, "");
    d.idempotency_key = "k-1".to_owned();
    let first = alice
        .decide(d.clone())
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    for _ in 0..3 {
        let again = alice
            .decide(d.clone())
            .await
            .unwrap()
            .into_inner()
            .request
            .unwrap();
        assert_eq!(again, first, "a replay returns the first result");
    }
    assert_eq!(first.votes.len(), 1);
    d.id = "r2".to_owned();
    let err = alice.decide(d).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "a key names one request");
    hub.stop().await;
}

pub async fn approve_after_expiry_fails_and_on_timeout_applies(b: Backend) {
    let Some(hub) = hub(b).await else { return };
    let mut agent = hub.agent("agent-1").await;
    let mut decisions = agent
        .decisions(DecisionsRequest { awaiting: vec![] })
        .await
        .unwrap()
        .into_inner();
    let short = |on_timeout: Verdict| Requirements {
        ttl_seconds: 1,
        on_timeout: on_timeout as i32,
        ..Requirements::default()
    };
    agent
        .submit(with_requirements(
            submit("t-deny", "mallory"),
            short(Verdict::Unspecified),
        ))
        .await
        .unwrap();
    agent
        .submit(with_requirements(
            submit("t-allow", "mallory"),
            short(Verdict::Allow),
        ))
        .await
        .unwrap();
    let mut seen = std::collections::HashMap::new();
    for _ in 0..2 {
        let e = within(5, &mut decisions).await;
        seen.insert(e.id.clone(), e);
    }
    let deny = &seen["t-deny"];
    assert_eq!(deny.state, RequestState::Expired as i32);
    assert_eq!(
        deny.decision.as_ref().unwrap().verdict,
        Verdict::Deny as i32
    );
    let allow = &seen["t-allow"];
    assert_eq!(
        allow.decision.as_ref().unwrap().verdict,
        Verdict::Allow as i32
    );
    let err = hub
        .approver("bob")
        .await
        .decide(decide("t-deny", Verdict::Allow, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    hub.stop().await;
}

pub async fn bad_input_is_invalid_argument(b: Backend) {
    let Some(hub) = hub(b).await else { return };
    let mut agent = hub.agent("agent-1").await;
    let mut huge = submit("big", "mallory");
    huge.action.as_mut().unwrap().argv = vec!["x".repeat(9000)];
    let mut many = submit("many", "mallory");
    many.action.as_mut().unwrap().argv = vec!["a".to_owned(); 2000];
    let mut class = submit("class", "mallory");
    class.action.as_mut().unwrap().class = 99;
    let mut on_timeout = submit("ot", "mallory");
    on_timeout.requirements = Some(Requirements {
        on_timeout: 7,
        ..Requirements::default()
    });
    let bad_id = submit("no spaces/allowed", "mallory");
    let mut sealed = submit("sealed", "mallory");
    sealed.action.as_mut().unwrap().sealed_context = vec![0; 300 * 1024];
    for s in [huge, many, class, on_timeout, bad_id, sealed] {
        let id = s.id.clone();
        let err = agent.submit(s).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{id}: {}", err.message());
    }
    let mut too_big = submit("2mib", "mallory");
    too_big.action.as_mut().unwrap().sealed_context = vec![0; 2 * 1024 * 1024];
    let err = agent.submit(too_big).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{}", err.message());

    agent.submit(submit("ok", "mallory")).await.unwrap();
    let mut bob = hub.approver("bob").await;
    let mut d = decide("ok", Verdict::Allow, "");
    d.verdict = 42;
    assert_eq!(
        bob.decide(d).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let mut d = decide("ok", Verdict::Allow, "");
    d.scope = 9;
    assert_eq!(
        bob.decide(d).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let err = bob
        .list(ListRequest {
            states: vec![77],
            ..ListRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Still serving, nothing stored from the refused submits.
    let all = bob
        .list(ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert_eq!(all.len(), 1);
    hub.stop().await;
}

pub async fn list_filters(b: Backend) {
    let Some(hub) = hub(b).await else { return };
    let mut a1 = hub.agent("agent-1").await;
    let mut a2 = hub.agent("agent-2").await;
    a1.submit(submit("l1", "mallory")).await.unwrap();
    a1.submit(submit("l2", "trent")).await.unwrap();
    let mut other_host = submit("l3", "mallory");
    other_host.host = "host-2".to_owned();
    a2.submit(other_host).await.unwrap();
    let mut bob = hub.approver("bob").await;
    let lister = bob.clone();
    let ids = |f: ListRequest| {
        let mut bob = lister.clone();
        async move {
            let mut ids: Vec<String> = bob
                .list(f)
                .await
                .unwrap()
                .into_inner()
                .requests
                .into_iter()
                .map(|r| r.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let by_agent = ListRequest {
        agent_id: "agent-1".to_owned(),
        ..ListRequest::default()
    };
    assert_eq!(ids(by_agent).await, ["l1", "l2"]);
    let by_requester = ListRequest {
        requester: "mallory".to_owned(),
        ..ListRequest::default()
    };
    assert_eq!(ids(by_requester).await, ["l1", "l3"]);
    let by_host = ListRequest {
        host: "host-2".to_owned(),
        states: vec![RequestState::Pending as i32],
        ..ListRequest::default()
    };
    assert_eq!(ids(by_host).await, ["l3"]);
    bob.decide(decide("l1", Verdict::Deny, "no")).await.unwrap();
    let denied = ListRequest {
        states: vec![RequestState::Denied as i32],
        ..ListRequest::default()
    };
    assert_eq!(ids(denied).await, ["l1"]);
    hub.stop().await;
}

async fn audit_chain<S: Store>(store: S) {
    let note = |action| Note { actor: "t", action };
    let rx = store.subscribe();
    let base = store.revision().await.unwrap();
    for id in ["a", "b"] {
        let r = ApprovalRequest {
            id: id.to_owned(),
            state: RequestState::Pending as i32,
            expires_unix_ms: 100,
            ..ApprovalRequest::default()
        };
        assert!(matches!(
            store.insert(r, note("submit")).await.unwrap(),
            Inserted::New(_)
        ));
    }
    assert!(rx.has_changed().unwrap());
    let again = ApprovalRequest {
        id: "a".to_owned(),
        ..ApprovalRequest::default()
    };
    assert!(matches!(
        store.insert(again, note("submit")).await.unwrap(),
        Inserted::Existing(r) if r.expires_unix_ms == 100
    ));
    let key = IdempotencyKey {
        principal: "p".to_owned(),
        key: "k".to_owned(),
    };
    let a2 = store
        .update("a", Some(key.clone()), note("vote"), |r| {
            r.state = RequestState::Denied as i32;
            Ok(Mutation::Changed)
        })
        .await
        .unwrap();
    let replay = store
        .update("a", Some(key), note("vote"), |_| {
            panic!("must not run twice")
        })
        .await
        .unwrap();
    assert_eq!(a2, replay);
    // A failing rule changes nothing, not even the revision.
    let err = store
        .update("b", None, note("vote"), |r| {
            r.host = "x".to_owned();
            Err(airlock_hub::ApiError::FailedPrecondition("no".to_owned()))
        })
        .await;
    assert!(err.is_err());
    assert_eq!(store.revision().await.unwrap(), a2.revision);
    assert_eq!(store.get("b").await.unwrap().unwrap().host, "");
    let changed: Vec<String> = store
        .changed_since(base + 1, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(changed, ["b", "a"], "each id once, latest revision order");
    let (due, next) = store.due(100).await.unwrap();
    assert_eq!((due, next), (vec!["b".to_owned()], None));
    let (pending, rev) = store.pending_snapshot().await.unwrap();
    assert_eq!((pending.len(), rev), (1, a2.revision));

    let audit = store.audit_since(0, 100).await.unwrap();
    assert_eq!(
        audit.len(),
        3,
        "two submits and one vote; no entry for no-ops"
    );
    assert_eq!(
        audit.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["submit", "submit", "vote"]
    );
    assert_eq!(verify_chain(GENESIS, &audit), Ok(()));
    assert!(verify_chain(GENESIS, &audit[1..]).is_err());
    assert_eq!(audit[2].revision, a2.revision);
}

pub async fn store_audit_chain_and_revisions(b: Backend) {
    match b {
        Backend::Memory => audit_chain(MemoryStore::new()).await,
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.db");
            audit_chain(SqliteStore::open(&path, SqliteSync::Full).unwrap()).await;
            // Reopened: revisions, requests and the chain head survive.
            let store = SqliteStore::open(&path, SqliteSync::Full).unwrap();
            assert_eq!(store.revision().await.unwrap(), 3);
            let r = ApprovalRequest {
                id: "c".to_owned(),
                ..ApprovalRequest::default()
            };
            store
                .insert(
                    r,
                    Note {
                        actor: "t",
                        action: "submit",
                    },
                )
                .await
                .unwrap();
            let audit = store.audit_since(0, 100).await.unwrap();
            assert_eq!(audit.len(), 4);
            assert_eq!(verify_chain(GENESIS, &audit), Ok(()));
        }
        Backend::Postgres => {
            let Some(url) = pg::database().await else {
                return;
            };
            audit_chain(PgStore::connect(&url).await.unwrap()).await;
        }
    }
}
