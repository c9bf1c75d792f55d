//! mTLS identities: certificates from `hub ca`, rules applied per principal, bad certs.

#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

mod util;

use std::path::Path;
use std::process::ExitCode;

use airlock_hub::IdentityMode;
use airlock_hub::approver::{ApproverArgs, ApproverCommand, StateFilter};
use airlock_hub::ca::{self, IssueRole};
use airlock_hub::identity::ClientIdentity;
use airlock_hub::store::{SqliteStore, SqliteSync};
use airlock_proto::v1::agent_service_client::AgentServiceClient;
use airlock_proto::v1::approver_service_client::ApproverServiceClient;
use airlock_proto::v1::{GroupQuorum, RequestState, Requirements, Verdict, WatchRequest};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use util::{TestHub, decide, quick_config, submit, with_requirements};

struct Pki {
    dir: tempfile::TempDir,
    /// A second directory with the same CA, for a second certificate of one principal.
    dir2: tempfile::TempDir,
    other_ca: tempfile::TempDir,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca::init(d).unwrap();
    let san = ["localhost".to_owned(), "127.0.0.1".to_owned()];
    ca::issue(d, IssueRole::Server, "hub", &[], &san, 30).unwrap();
    ca::issue(d, IssueRole::Agent, "agent-1", &[], &[], 30).unwrap();
    ca::issue(
        d,
        IssueRole::Approver,
        "alice",
        &["sre".to_owned()],
        &[],
        30,
    )
    .unwrap();
    ca::issue(d, IssueRole::Approver, "bob", &["sre".to_owned()], &[], 30).unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    for f in [ca::CA_CERT, ca::CA_KEY] {
        std::fs::copy(d.join(f), dir2.path().join(f)).unwrap();
    }
    let groups = ["sre".to_owned(), "sec".to_owned()];
    ca::issue(dir2.path(), IssueRole::Admin, "alice", &groups, &[], 30).unwrap();
    let other_ca = tempfile::tempdir().unwrap();
    ca::init(other_ca.path()).unwrap();
    ca::issue(
        other_ca.path(),
        IssueRole::Approver,
        "carol",
        &["sre".to_owned()],
        &[],
        30,
    )
    .unwrap();
    assert!(ca::init(d).is_err(), "init never overwrites an existing CA");
    Pki {
        dir,
        dir2,
        other_ca,
    }
}

async fn start(pki: &Pki) -> (TestHub, tempfile::TempDir) {
    let d = pki.dir.path();
    let identity =
        IdentityMode::tls_files(&d.join("hub.pem"), &d.join("hub.key"), &d.join("ca.pem")).unwrap();
    let db = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&db.path().join("hub.db"), SqliteSync::Normal).unwrap();
    (
        TestHub::with_store(store, quick_config(), identity).await,
        db,
    )
}

async fn channel(
    hub: &TestHub,
    ca_dir: &Path,
    cert: Option<(&Path, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(ca_dir.join("ca.pem")).unwrap(),
        ))
        .domain_name("localhost");
    if let Some((dir, name)) = cert {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(dir.join(format!("{name}.pem"))).unwrap(),
            std::fs::read(dir.join(format!("{name}.key"))).unwrap(),
        ));
    }
    Endpoint::from_shared(format!("https://localhost:{}", hub.addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
}

type Approver =
    ApproverServiceClient<tonic::service::interceptor::InterceptedService<Channel, ClientIdentity>>;

async fn approver(hub: &TestHub, dir: &Path, ca_dir: &Path, name: &str) -> Approver {
    let ch = channel(hub, ca_dir, Some((dir, name))).await.unwrap();
    ApproverServiceClient::with_interceptor(ch, ClientIdentity::certificate())
}

#[tokio::test]
async fn certificates_name_principals_and_rules_follow_them() {
    let pki = pki();
    let d = pki.dir.path();
    let (hub, _db) = start(&pki).await;
    // The agent's headers claim approver; under mTLS only the certificate counts.
    let header_liar = ClientIdentity::new("bob", airlock_hub::identity::Role::Approver).unwrap();
    let ch = channel(&hub, d, Some((d, "agent-1"))).await.unwrap();
    let mut agent = AgentServiceClient::with_interceptor(ch.clone(), header_liar.clone());
    let quorum = Requirements {
        groups: vec![GroupQuorum {
            group: "sre".to_owned(),
            min_approvals: 2,
        }],
        ..Requirements::default()
    };
    let stored = agent
        .submit(with_requirements(submit("m1", "mallory"), quorum))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(stored.agent_id, "agent-1", "principal from the certificate");
    agent.submit(submit("m2", "alice")).await.unwrap();

    let mut agent_as_approver = ApproverServiceClient::with_interceptor(ch, header_liar);
    let err = agent_as_approver
        .decide(decide("m1", Verdict::Allow, ""))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "an agent certificate never decides"
    );

    let mut alice = approver(&hub, d, d, "alice").await;
    let mut alice_admin = approver(&hub, pki.dir2.path(), d, "alice").await;
    let r = alice
        .decide(decide("m1", Verdict::Allow, ""))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(r.state, RequestState::Pending as i32);
    let r = alice_admin
        .decide(decide("m1", Verdict::Allow, ""))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(
        (r.state, r.votes.len()),
        (RequestState::Pending as i32, 1),
        "a second certificate of alice is still alice"
    );
    for client in [&mut alice, &mut alice_admin] {
        let err = client
            .decide(decide("m2", Verdict::Allow, ""))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "alice requested m2");
    }
    let mut bob = approver(&hub, d, d, "bob").await;
    let r = bob
        .decide(decide("m1", Verdict::Allow, ""))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(r.state, RequestState::Approved as i32);

    // The CLI over mTLS.
    let args = ApproverArgs {
        hub: format!("https://localhost:{}", hub.addr.port()),
        principal: None,
        groups: Vec::new(),
        json: true,
        ca: Some(d.join("ca.pem")),
        cert: Some(d.join("bob.pem")),
        key: Some(d.join("bob.key")),
    };
    let mut out = Vec::new();
    let code = airlock_hub::approver::run_with_output(
        args,
        ApproverCommand::List {
            state: StateFilter::All,
            limit: 10,
            by: Default::default(),
        },
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(code, ExitCode::SUCCESS);
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 2);
    hub.stop().await;
}

#[tokio::test]
async fn bad_certificates_are_refused() {
    let pki = pki();
    let d = pki.dir.path();
    let (hub, _db) = start(&pki).await;
    let refused = |r: Result<
        tonic::Response<tonic::Streaming<airlock_proto::v1::WatchEvent>>,
        tonic::Status,
    >| {
        let Err(err) = r else {
            panic!("a bad certificate must be refused")
        };
        assert!(
            matches!(
                err.code(),
                Code::Unavailable | Code::Unknown | Code::Unauthenticated
            ),
            "{err:?}"
        );
    };
    // A certificate from another CA, no certificate, and the server's own certificate
    // (serverAuth only, no airlock principal): each fails, none reaches a handler.
    let attempts = [
        channel(&hub, d, Some((pki.other_ca.path(), "carol"))).await,
        channel(&hub, d, None).await,
        channel(&hub, d, Some((d, "hub"))).await,
    ];
    for ch in attempts {
        match ch {
            Err(_) => {}
            Ok(ch) => {
                let mut c =
                    ApproverServiceClient::with_interceptor(ch, ClientIdentity::certificate());
                refused(c.watch(WatchRequest { since_revision: 0 }).await);
            }
        }
    }
    // The hub still serves good clients.
    let mut bob = approver(&hub, d, d, "bob").await;
    bob.watch(WatchRequest { since_revision: 0 }).await.unwrap();
    hub.stop().await;
}

/// A Submit whose `id` (a proto string) is not UTF-8, sent as raw bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct RawSubmit {
    #[prost(bytes = "vec", tag = "1")]
    id: Vec<u8>,
}

#[tokio::test]
async fn invalid_utf8_is_a_clean_grpc_error() {
    use tonic::codegen::http::uri::PathAndQuery;
    let hub = TestHub::start().await;
    let channel = hub.raw_channel().await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(RawSubmit {
        id: vec![b'a', 0xff, 0xfe, b'b'],
    });
    ClientIdentity::new("agent-1", airlock_hub::identity::Role::Agent)
        .unwrap()
        .apply(request.metadata_mut());
    let response: Result<tonic::Response<airlock_proto::v1::SubmitResponse>, tonic::Status> = grpc
        .unary(
            request,
            PathAndQuery::from_static("/airlock.v1.AgentService/Submit"),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    let err = response.unwrap_err();
    // gRPC's status-code guide maps unparseable messages to INTERNAL; the message names it.
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("decode"), "{}", err.message());
    // The hub is unaffected.
    hub.agent("agent-1")
        .await
        .submit(submit("after", "mallory"))
        .await
        .unwrap();
    hub.stop().await;
}
