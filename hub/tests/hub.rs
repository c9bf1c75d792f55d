//! The hub over real gRPC on loopback: agents, approvers, streams, expiry.

#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

mod util;

use std::time::Duration;

use airlock_hub::HubConfig;
use airlock_hub::identity::{Role, with_principal};
use airlock_proto::v1::{
    CancelRequest, DecisionCause, DecisionsRequest, GetRequest, GroupQuorum, ListRequest,
    RequestState, Requirements, Verdict, WatchRequest, watch_event,
};
use tonic::{Code, Request};
use util::{Backend, TestHub, decide, next_event, quick_config, submit, with_requirements, within};

#[path = "suite/rules.rs"]
mod rules_suite;

async fn submit_is_idempotent_and_rejects_a_changed_payload(b: Backend) {
    let Some(hub) = TestHub::on(b, quick_config()).await else {
        return;
    };
    let mut agent = hub.agent("agent-1").await;
    let first = agent
        .submit(submit("req-1", "alice"))
        .await
        .unwrap()
        .into_inner();
    let again = agent
        .submit(submit("req-1", "alice"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.request, again.request,
        "same id, same payload: the stored request"
    );
    let stored = first.request.unwrap();
    assert_eq!(stored.state, RequestState::Pending as i32);
    assert_eq!(stored.agent_id, "agent-1");
    assert_eq!(
        stored.action.as_ref().unwrap().sealed_context,
        b"sealed-for-auditors"
    );
    assert!(stored.revision > 0);

    let err = agent.submit(submit("req-1", "bob")).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    // Another agent reusing the id is a different payload too.
    let err = hub
        .agent("agent-2")
        .await
        .submit(submit("req-1", "alice"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    hub.stop().await;
}

async fn roles_are_enforced(b: Backend) {
    let Some(hub) = TestHub::on(b, quick_config()).await else {
        return;
    };
    let mut agent = hub.agent("agent-1").await;
    agent.submit(submit("req-1", "alice")).await.unwrap();

    // An agent credential can never decide (nor watch).
    let mut as_agent = hub.approver_as("agent-1", Role::Agent, &[]).await;
    let err = as_agent
        .decide(decide("req-1", Verdict::Allow, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Approvers and admins cannot submit.
    for role in [Role::Approver, Role::Admin] {
        let mut client =
            airlock_proto::v1::agent_service_client::AgentServiceClient::connect(hub.url())
                .await
                .unwrap();
        let req = with_principal(Request::new(submit("req-x", "alice")), "carol", role).unwrap();
        assert_eq!(
            client.submit(req).await.unwrap_err().code(),
            Code::PermissionDenied
        );
    }
    // No identity at all.
    let mut bare =
        airlock_proto::v1::approver_service_client::ApproverServiceClient::connect(hub.url())
            .await
            .unwrap();
    let err = bare.list(ListRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    hub.stop().await;
}

async fn watch_sends_snapshot_then_changes_with_increasing_revisions_and_resumes(b: Backend) {
    let Some(hub) = TestHub::on(b, quick_config()).await else {
        return;
    };
    let mut agent = hub.agent("agent-1").await;
    let mut approver = hub.approver("bob").await;
    agent.submit(submit("req-1", "alice")).await.unwrap();

    let mut stream = approver
        .watch(WatchRequest { since_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let watch_event::Event::Snapshot(snap) = next_event(&mut stream).await else {
        panic!("first event must be the snapshot");
    };
    assert_eq!(snap.requests.len(), 1);
    assert_eq!(snap.requests[0].id, "req-1");
    let mut last = snap.revision;

    agent.submit(submit("req-2", "alice")).await.unwrap();
    approver
        .decide(decide("req-1", Verdict::Deny, "not today"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let watch_event::Event::Changed(req) = next_event(&mut stream).await else {
            panic!("expected a change");
        };
        assert!(req.revision > last, "revisions increase");
        last = req.revision;
        seen.push((req.id, req.state));
    }
    assert_eq!(
        seen,
        [
            ("req-2".to_owned(), RequestState::Pending as i32),
            ("req-1".to_owned(), RequestState::Denied as i32)
        ]
    );

    // Heartbeats arrive while idle and carry the last revision.
    let beat = loop {
        if let Some(watch_event::Event::Heartbeat(b)) = within(5, &mut stream).await.event {
            break b;
        }
    };
    assert_eq!(beat.revision, last);
    drop(stream);

    // Resume after the snapshot revision: only what changed since, no snapshot.
    let mut resumed = approver
        .watch(WatchRequest {
            since_revision: snap.revision,
        })
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let watch_event::Event::Changed(req) = next_event(&mut resumed).await else {
            panic!("resume sends changes, not a snapshot");
        };
        ids.push(req.id);
    }
    assert_eq!(ids, ["req-2", "req-1"]);
    hub.stop().await;
}

async fn approve_reaches_the_agent_stream(b: Backend) {
    let Some(hub) = TestHub::on(b, quick_config()).await else {
        return;
    };
    let mut agent = hub.agent("agent-1").await;
    agent.submit(submit("req-1", "alice")).await.unwrap();
    let mut decisions = agent
        .decisions(DecisionsRequest {
            awaiting: vec!["req-1".to_owned()],
        })
        .await
        .unwrap()
        .into_inner();
    let mut approver = hub.approver("bob").await;
    let decided = approver
        .decide(decide("req-1", Verdict::Allow, "looks fine"))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(decided.state, RequestState::Approved as i32);

    let event = within(5, &mut decisions).await;
    assert_eq!(event.id, "req-1");
    assert_eq!(event.state, RequestState::Approved as i32);
    let decision = event.decision.unwrap();
    assert_eq!(decision.verdict, Verdict::Allow as i32);
    assert_eq!(decision.approvers, ["bob"]);
    assert_eq!(decision.grant.unwrap().action_hash, "hash-req-1");
    hub.stop().await;
}

async fn deny_needs_a_reason_and_denies(b: Backend) {
    let Some(hub) = TestHub::on(b, quick_config()).await else {
        return;
    };
    let mut agent = hub.agent("agent-1").await;
    agent.submit(submit("req-1", "alice")).await.unwrap();
    let mut approver = hub.approver("bob").await;
    let err = approver
        .decide(decide("req-1", Verdict::Deny, "   "))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let denied = approver
        .decide(decide("req-1", Verdict::Deny, "exfiltration"))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(denied.state, RequestState::Denied as i32);
    assert_eq!(denied.decision.unwrap().reason, "exfiltration");
    assert_eq!(
        denied.votes.len(),
        1,
        "the reasonless attempt recorded no vote"
    );
    hub.stop().await;
}

async fn self_approval_is_rejected_case_insensitively(b: Backend) {
    let Some(hub) = TestHub::on(b, quick_config()).await else {
        return;
    };
    hub.agent("agent-1")
        .await
        .submit(submit("req-1", "alice"))
        .await
        .unwrap();
    for who in ["alice", "ALICE"] {
        let err = hub
            .approver_as(who, Role::Admin, &[])
            .await
            .decide(decide("req-1", Verdict::Allow, ""))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{who}");
    }
    hub.stop().await;
}

async fn same_principal_counts_once_in_a_quorum_of_two(b: Backend) {
    let Some(hub) = TestHub::on(b, quick_config()).await else {
        return;
    };
    let quorum = Requirements {
        groups: vec![GroupQuorum {
            group: "sre".to_owned(),
            min_approvals: 2,
        }],
        ..Requirements::default()
    };
    hub.agent("agent-1")
        .await
        .submit(with_requirements(submit("req-1", "alice"), quorum))
        .await
        .unwrap();
    let mut bob = hub.approver_as("bob", Role::Approver, &["sre"]).await;
    let mut bob_again = hub.approver_as("Bob", Role::Approver, &["sre"]).await;
    let first = bob
        .decide(decide("req-1", Verdict::Allow, ""))
        .await
        .unwrap();
    let second = bob_again
        .decide(decide("req-1", Verdict::Allow, ""))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(
        second.state,
        RequestState::Pending as i32,
        "one person is not two"
    );
    assert_eq!(second.votes.len(), 1);
    assert_eq!(
        first.into_inner().request.unwrap().revision,
        second.revision
    );

    let mut carol = hub.approver_as("carol", Role::Approver, &["sre"]).await;
    let done = carol
        .decide(decide("req-1", Verdict::Allow, ""))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(done.state, RequestState::Approved as i32);
    let mut approvers = done.decision.unwrap().approvers;
    approvers.sort();
    assert_eq!(approvers, ["bob", "carol"]);
    hub.stop().await;
}

async fn expiry_denies_and_notifies_agent_and_watchers(b: Backend) {
    let Some(hub) = TestHub::on(b, quick_config()).await else {
        return;
    };
    let mut agent = hub.agent("agent-1").await;
    let mut decisions = agent
        .decisions(DecisionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut approver = hub.approver("bob").await;
    let mut watch = approver
        .watch(WatchRequest { since_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let _snapshot = next_event(&mut watch).await;
    let short = Requirements {
        ttl_seconds: 1,
        ..Requirements::default()
    };
    agent
        .submit(with_requirements(submit("req-1", "alice"), short))
        .await
        .unwrap();

    let event = within(5, &mut decisions).await;
    assert_eq!(event.id, "req-1");
    assert_eq!(event.state, RequestState::Expired as i32);
    let decision = event.decision.unwrap();
    assert_eq!(decision.verdict, Verdict::Deny as i32, "deny by default");
    assert_eq!(decision.cause, DecisionCause::Expired as i32);

    let watch_event::Event::Changed(pending) = next_event(&mut watch).await else {
        panic!("change expected");
    };
    assert_eq!(pending.state, RequestState::Pending as i32);
    let watch_event::Event::Changed(expired) = next_event(&mut watch).await else {
        panic!("change expected");
    };
    assert_eq!(expired.state, RequestState::Expired as i32);

    let err = approver
        .decide(decide("req-1", Verdict::Allow, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    hub.stop().await;
}

async fn default_ttl_applies_when_the_rule_sets_none(b: Backend) {
    let config = HubConfig {
        default_ttl: Duration::from_secs(42),
        heartbeat: Duration::from_secs(5),
    };
    let Some(hub) = TestHub::on(b, config).await else {
        return;
    };
    let stored = hub
        .agent("agent-1")
        .await
        .submit(submit("req-1", "alice"))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(stored.expires_unix_ms - stored.created_unix_ms, 42_000);
    hub.stop().await;
}

async fn only_the_submitting_agent_cancels(b: Backend) {
    let Some(hub) = TestHub::on(b, quick_config()).await else {
        return;
    };
    let mut agent = hub.agent("agent-1").await;
    agent.submit(submit("req-1", "alice")).await.unwrap();
    let cancel = || CancelRequest {
        id: "req-1".to_owned(),
        reason: "process exited".to_owned(),
    };
    let err = hub
        .agent("agent-2")
        .await
        .cancel(cancel())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let cancelled = agent
        .cancel(cancel())
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(cancelled.state, RequestState::Cancelled as i32);
    assert_eq!(
        cancelled.decision.unwrap().cause,
        DecisionCause::Cancelled as i32
    );

    let err = hub
        .approver("bob")
        .await
        .decide(decide("req-1", Verdict::Allow, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    hub.stop().await;
}

async fn decide_after_final_is_failed_precondition(b: Backend) {
    let Some(hub) = TestHub::on(b, quick_config()).await else {
        return;
    };
    hub.agent("agent-1")
        .await
        .submit(submit("req-1", "alice"))
        .await
        .unwrap();
    let mut bob = hub.approver("bob").await;
    bob.decide(decide("req-1", Verdict::Allow, ""))
        .await
        .unwrap();
    let mut carol = hub.approver("carol").await;
    let err = carol
        .decide(decide("req-1", Verdict::Deny, "too late"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        bob.decide(decide("nope", Verdict::Allow, ""))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    hub.stop().await;
}

async fn decisions_replay_final_ids_on_reconnect(b: Backend) {
    let Some(hub) = TestHub::on(b, quick_config()).await else {
        return;
    };
    let mut agent = hub.agent("agent-1").await;
    for id in ["req-1", "req-2", "req-3"] {
        agent.submit(submit(id, "alice")).await.unwrap();
    }
    // Another agent's request must never be replayed to this one.
    hub.agent("agent-2")
        .await
        .submit(submit("other", "alice"))
        .await
        .unwrap();
    let mut bob = hub.approver("bob").await;
    bob.decide(decide("req-1", Verdict::Allow, ""))
        .await
        .unwrap();
    bob.decide(decide("req-2", Verdict::Deny, "no"))
        .await
        .unwrap();
    bob.decide(decide("other", Verdict::Deny, "no"))
        .await
        .unwrap();

    let mut stream = agent
        .decisions(DecisionsRequest {
            awaiting: ["req-1", "req-2", "req-3", "other"]
                .map(str::to_owned)
                .to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    let a = within(5, &mut stream).await;
    let b = within(5, &mut stream).await;
    assert_eq!(
        (a.id.as_str(), a.state),
        ("req-1", RequestState::Approved as i32)
    );
    assert_eq!(
        (b.id.as_str(), b.state),
        ("req-2", RequestState::Denied as i32)
    );

    // req-3 is still pending; its decision comes live, once.
    bob.decide(decide("req-3", Verdict::Allow, ""))
        .await
        .unwrap();
    let c = within(5, &mut stream).await;
    assert_eq!(
        (c.id.as_str(), c.state),
        ("req-3", RequestState::Approved as i32)
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.message())
            .await
            .is_err(),
        "nothing else (no duplicate, no foreign request)"
    );
    hub.stop().await;
}

async fn decide_idempotency_key_returns_the_first_result(b: Backend) {
    let Some(hub) = TestHub::on(b, quick_config()).await else {
        return;
    };
    hub.agent("agent-1")
        .await
        .submit(submit("req-1", "alice"))
        .await
        .unwrap();
    let mut bob = hub.approver("bob").await;
    let mut req = decide("req-1", Verdict::Allow, "ok");
    req.idempotency_key = "k-1".to_owned();
    let first = bob.decide(req.clone()).await.unwrap().into_inner();
    // The request is final now, yet the retry returns the first result, not an error.
    let retry = bob.decide(req).await.unwrap().into_inner();
    assert_eq!(first, retry);
    assert_eq!(first.request.unwrap().state, RequestState::Approved as i32);
    hub.stop().await;
}

async fn get_resolves_unique_prefixes_and_list_filters(b: Backend) {
    let Some(hub) = TestHub::on(b, quick_config()).await else {
        return;
    };
    let mut agent = hub.agent("agent-1").await;
    for id in ["abcd-1111", "abcd-2222", "ffff-0000"] {
        agent.submit(submit(id, "alice")).await.unwrap();
    }
    let mut bob = hub.approver("bob").await;
    bob.decide(decide("ffff-0000", Verdict::Deny, "no"))
        .await
        .unwrap();
    let got = bob
        .get(GetRequest {
            id: "abcd-2".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(got.id, "abcd-2222");
    assert!(
        got.action.unwrap().sealed_context.is_empty(),
        "approvers never receive the sealed raw context"
    );
    let err = bob
        .get(GetRequest {
            id: "abcd".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "ambiguous");
    let err = bob
        .get(GetRequest {
            id: "ab".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "too short to be a prefix");

    let pending = bob
        .list(ListRequest {
            states: vec![RequestState::Pending as i32],
            limit: 0,
            ..ListRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert_eq!(pending.len(), 2);
    let one = bob
        .list(ListRequest {
            states: vec![],
            limit: 1,
            ..ListRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert_eq!(one.len(), 1);
    hub.stop().await;
}

#[tokio::test]
async fn dev_mode_refuses_non_loopback() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: airlock_hub::ServeArgs,
    }
    assert!(
        Cli::try_parse_from(["hub"]).is_err(),
        "--dev-tokens is required"
    );
    let cli = Cli::try_parse_from(["hub", "--dev-tokens", "--listen", "0.0.0.0:0"]).unwrap();
    let err = airlock_hub::serve(cli.serve, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        matches!(err, airlock_hub::HubError::DevModeNotLoopback(_)),
        "{err}"
    );
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let hub = TestHub::start().await;
    let mut health = HealthClient::new(hub.raw_channel().await);
    let status = health
        .check(HealthCheckRequest {
            service: "airlock.v1.ApproverService".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let mut reflection = ServerReflectionClient::new(hub.raw_channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = within(5, &mut replies).await;
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"airlock.v1.AgentService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"airlock.v1.ApproverService".to_owned()),
        "{names:?}"
    );
    hub.stop().await;
}

/// Runs every behaviour test against each store backend.
macro_rules! backends {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Memory).await })*
        }
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Postgres).await })*
        }
    };
}

use rules_suite::*;

backends!(
    submit_is_idempotent_and_rejects_a_changed_payload,
    roles_are_enforced,
    watch_sends_snapshot_then_changes_with_increasing_revisions_and_resumes,
    approve_reaches_the_agent_stream,
    deny_needs_a_reason_and_denies,
    self_approval_is_rejected_case_insensitively,
    same_principal_counts_once_in_a_quorum_of_two,
    expiry_denies_and_notifies_agent_and_watchers,
    default_ttl_applies_when_the_rule_sets_none,
    only_the_submitting_agent_cancels,
    decide_after_final_is_failed_precondition,
    decisions_replay_final_ids_on_reconnect,
    decide_idempotency_key_returns_the_first_result,
    get_resolves_unique_prefixes_and_list_filters,
    grant_for_a_duration_covers_only_the_same_action,
    quorum_across_groups_with_a_double_voter,
    denial_threshold_and_reasons,
    agents_never_decide_and_admins_never_self_approve,
    replayed_decide_is_one_vote,
    approve_after_expiry_fails_and_on_timeout_applies,
    bad_input_is_invalid_argument,
    list_filters,
    store_audit_chain_and_revisions,
);
