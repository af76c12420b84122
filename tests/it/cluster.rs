//! Scale-out on MariaDB Galera: three `serve` replicas, each on its own node of a
//! private 3-node cluster, a gateway in front of each, one WeChat simulator.
//! Conflicting logins and refreshes spread across the replicas, and nodes that
//! crash, leave the Primary component or desync under load.
//!
//! The numbers (conflict counters, failover timings) are printed; run with
//! `cargo test --test it cluster -- --nocapture` to see them.

use crate::{
    galera::GaleraCluster,
    health::{check, health_client},
    helpers::{init_test_log, new_apps, start_simulator, test_settings, unique_user},
};
use mp_auth::{
    api::health::HEALTH_AUTH,
    callers::{generate_key, key_hash_hex},
    config::{CallerSettings, DatabaseSettings, Settings},
    gateway::Gateway,
    proto::{self, auth_client::AuthClient},
    store::{RevokedSession, Store},
    tokens::{Algorithm, SigningKey},
};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::{Barrier, oneshot};
use tonic_health::pb::health_check_response::ServingStatus;
use wechat_sim::{RunningSimulator, SimClient};

/// A CN mobile number no other login of this test binary uses. `unique_phone`
/// draws from 10^8 numbers at random: among the thousands of logins of the load
/// test two would share a phone (and so a user) in a sizeable share of runs.
fn next_phone() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: std::sync::OnceLock<AtomicU64> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| {
        use rand::Rng as _;
        AtomicU64::new(rand::rng().random_range(0..90_000_000))
    });
    format!(
        "139{:08}",
        next.fetch_add(1, Ordering::Relaxed) % 100_000_000
    )
}

/// One `serve` replica and the gateway in front of it.
struct Replica {
    grpc_addr: SocketAddr,
    gateway: String,
    _stop: Vec<oneshot::Sender<()>>,
}

/// The cluster, the simulator and the replicas (replica `i` on node `i`). Fields
/// drop in order: the replicas stop before the nodes are killed.
struct Deployment {
    replicas: Vec<Replica>,
    _sim: RunningSimulator,
    sim: SimClient,
    app_id: String,
    /// The database's URL on node 0.
    db_url: String,
    http: reqwest::Client,
    cluster: GaleraCluster,
}

/// What one request through a gateway answered.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    body: Value,
    took: Duration,
}

impl Answer {
    fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or_default()
    }
}

impl Deployment {
    /// A 3-node cluster with a migrated database, the simulator, and a replica
    /// plus gateway per node. `tweak` adjusts every replica's settings.
    async fn start(tweak: impl Fn(&mut Settings)) -> Deployment {
        init_test_log();
        let started = Instant::now();
        let cluster = GaleraCluster::start(3).await;
        let cluster_took = started.elapsed();
        let db_url = cluster.create_database().await;
        let apps = new_apps(1);
        let sim = start_simulator(&apps, Duration::from_secs(3600)).await;
        mp_auth::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut replicas = Vec::new();
        for i in 0..cluster.len() {
            let mut settings = test_settings(&apps, &sim.base_url(), &cluster.url_on(i, &db_url));
            settings.database.migrate_on_start = i == 0;
            settings.gateway.rate_limit_per_sec = 0;
            tweak(&mut settings);
            let server = mp_auth::startup::grpc_server(&settings)
                .await
                .expect("replica builds");
            let grpc_addr = server.local_addr();
            let (stop_grpc, stopped) = oneshot::channel::<()>();
            tokio::spawn(server.run_until(async {
                let _ = stopped.await;
            }));
            settings.gateway.backend_url = format!("http://{grpc_addr}");
            let gateway = Gateway::build(&settings).await.expect("gateway builds");
            let gateway_url = format!("http://{}", gateway.local_addr());
            let (stop_gateway, stopped) = oneshot::channel::<()>();
            tokio::spawn(gateway.run_until(async {
                let _ = stopped.await;
            }));
            replicas.push(Replica {
                grpc_addr,
                gateway: gateway_url,
                _stop: vec![stop_grpc, stop_gateway],
            });
        }
        let deployment = Deployment {
            sim: sim.client(),
            _sim: sim,
            app_id: apps[0].0.clone(),
            db_url,
            replicas,
            http,
            cluster,
        };
        for i in 0..deployment.replicas.len() {
            deployment
                .wait_health(i, ServingStatus::Serving, Duration::from_secs(30))
                .await;
        }
        eprintln!(
            "galera: 3-node cluster Synced in {cluster_took:.1?}, 3 replicas SERVING after {:.1?}",
            started.elapsed()
        );
        deployment
    }

    /// Mints a `wx.login` code (and sets the user's phone) and a phone code.
    async fn codes(&self, user: &str, phone: &str) -> (String, String) {
        let code = self
            .sim
            .login(&self.app_id, user, Some(phone))
            .await
            .unwrap()
            .code;
        let phone_code = self.sim.phone(&self.app_id, user).await.unwrap().code;
        (code, phone_code)
    }

    async fn post(&self, replica: usize, path: &str, body: Value) -> Answer {
        let started = Instant::now();
        let resp = self
            .http
            .post(format!("{}{path}", self.replicas[replica].gateway))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path} on replica {replica}: {e}"));
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            body,
            took: started.elapsed(),
        }
    }

    /// `POST /auth/mp_login` (new phone-code flow) through replica `replica`'s gateway.
    async fn login(&self, replica: usize, code: &str, phone_code: &str) -> Answer {
        let body = json!({ "code": code, "phoneCode": phone_code, "appId": self.app_id });
        self.post(replica, "/auth/mp_login", body).await
    }

    /// `POST /auth/refresh` through replica `replica`'s gateway.
    async fn refresh(&self, replica: usize, token: &str) -> Answer {
        let body = json!({ "refreshToken": token, "appId": self.app_id });
        self.post(replica, "/auth/refresh", body).await
    }

    /// `POST /auth/logout` through replica `replica`'s gateway.
    async fn logout(&self, replica: usize, token: &str) -> Answer {
        self.post(replica, "/auth/logout", json!({ "refreshToken": token }))
            .await
    }

    /// The gRPC health of `mpauth.v1.Auth` on replica `replica`.
    async fn health(&self, replica: usize) -> ServingStatus {
        let mut client = health_client(self.replicas[replica].grpc_addr).await;
        check(&mut client, HEALTH_AUTH).await
    }

    /// Polls replica `replica`'s health until it is `want`; returns how long that took.
    async fn wait_health(&self, replica: usize, want: ServingStatus, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let got = self.health(replica).await;
            if got == want {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "replica {replica} still {got:?} after {within:?}, expected {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A store on node `node` (for reading rows the way the service sees them).
    async fn store_on(&self, node: usize) -> Store {
        let url = SecretString::from(self.cluster.url_on(node, &self.db_url));
        Store::connect(&url, &DatabaseSettings::default())
            .await
            .unwrap()
    }

    /// The database's name.
    fn database(&self) -> &str {
        self.db_url.rsplit('/').next().unwrap()
    }

    /// Runs a query on node `node` after the node has applied everything the
    /// cluster committed before it (`wsrep_sync_wait`), and returns its rows.
    async fn rows(&self, node: usize, query: &str) -> Vec<Vec<String>> {
        let sql = format!(
            "SET SESSION wsrep_sync_wait = 1; USE `{}`; {query}",
            self.database()
        );
        self.cluster
            .sql(node, &sql)
            .await
            .lines()
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect()
    }

    /// Row counts and checksums of the service's tables on node `node`.
    async fn table_digest(&self, node: usize) -> Vec<Vec<String>> {
        self.rows(
            node,
            "CHECKSUM TABLE users, wechat_identities, sessions, deleted_users",
        )
        .await
    }

    /// Every node holds the same rows.
    async fn assert_nodes_agree(&self) {
        let first = self.table_digest(0).await;
        for node in 1..self.cluster.len() {
            assert_eq!(
                self.table_digest(node).await,
                first,
                "node {node} holds other rows than node 0"
            );
        }
    }
}

/// One login of a test: who, on which replica, and what came back.
#[derive(Debug, Clone)]
struct Attempt {
    replica: usize,
    user: String,
    phone: String,
    answer: Answer,
    /// When the request was sent, since the start of the load.
    at: Duration,
}

/// The users, identities and sessions of the phones, openids and users of a test,
/// as node `node` has them.
struct Rows {
    /// phone (E.164) -> user ids with that phone
    users_by_phone: HashMap<String, Vec<i64>>,
    /// openid -> user id (NULL as None)
    identity_user: HashMap<String, Option<i64>>,
    /// user id -> sessions
    sessions: HashMap<i64, usize>,
}

impl Rows {
    async fn read(d: &Deployment, node: usize) -> Rows {
        let mut users_by_phone: HashMap<String, Vec<i64>> = HashMap::new();
        for row in d.rows(node, "SELECT phone, id FROM users").await {
            users_by_phone
                .entry(row[0].clone())
                .or_default()
                .push(row[1].parse().unwrap());
        }
        let identity_user = d
            .rows(node, "SELECT openid, user_id FROM wechat_identities")
            .await
            .into_iter()
            .map(|row| (row[0].clone(), row[1].parse().ok()))
            .collect();
        let sessions = d
            .rows(
                node,
                "SELECT user_id, COUNT(*) FROM sessions GROUP BY user_id",
            )
            .await
            .into_iter()
            .map(|row| (row[0].parse().unwrap(), row[1].parse().unwrap()))
            .collect();
        Rows {
            users_by_phone,
            identity_user,
            sessions,
        }
    }

    fn user_of_phone(&self, phone: &str) -> Option<i64> {
        let ids = self.users_by_phone.get(&format!("+86{phone}"))?;
        assert_eq!(ids.len(), 1, "phone {phone} has {} users", ids.len());
        Some(ids[0])
    }
}

/// The openid the simulator gives `user` (the token's `openid` field says it too).
fn openid_of(answer: &Answer) -> String {
    answer.body["openid"].as_str().unwrap().to_owned()
}

fn user_id_of(answer: &Answer) -> i64 {
    answer.body["user_id"].as_str().unwrap().parse().unwrap()
}

/// `Auth.VerifyToken` on replica `replica` with the caller key `key`: `Ok` or the reason.
async fn verify_on(d: &Deployment, replica: usize, key: &str, token: &str) -> Result<(), String> {
    let mut client = AuthClient::connect(format!("http://{}", d.replicas[replica].grpc_addr))
        .await
        .unwrap();
    let mut request = tonic::Request::new(proto::VerifyTokenRequest {
        access_token: token.into(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    match client.verify_token(request).await {
        Ok(_) => Ok(()),
        Err(status) => Err(crate::helpers::reason(&status)),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_logins_and_refreshes_spread_over_three_galera_replicas_leave_one_consistent_outcome()
 {
    // Every replica signs with the same ES256 key and lets one internal caller verify.
    let signing_key = SigningKey::generate(Algorithm::Es256).unwrap().private_pem;
    let verifier = generate_key();
    let verifier_hash = key_hash_hex(&verifier);
    let d = Deployment::start(move |s| {
        s.token.signing_key = Some(SecretString::from(signing_key.clone()));
        s.callers = vec![CallerSettings {
            name: "orders".into(),
            key_sha256: verifier_hash.clone(),
            permissions: vec!["tokens:verify".into()],
        }];
    })
    .await;
    let (cert_before, bf_before) = d.cluster.conflict_counters().await;

    // Conflicts: groups of concurrent logins for one new phone, from two WeChat
    // users (openids) of that phone, each login with its own code, spread across
    // the three replicas and released together.
    const GROUPS: usize = 24;
    const PER_GROUP: usize = 6;
    const WAVE: usize = 6;
    let d = Arc::new(d);
    let mut groups: Vec<Vec<Attempt>> = Vec::new();
    for wave in 0..GROUPS / WAVE {
        let mut prepared = Vec::new();
        for g in 0..WAVE {
            let phone = next_phone();
            let users = [unique_user(), unique_user()];
            for j in 0..PER_GROUP {
                let user = users[j % 2].clone();
                let (code, phone_code) = d.codes(&user, &phone).await;
                prepared.push((
                    wave * WAVE + g,
                    (g + j) % 3,
                    user,
                    phone.clone(),
                    code,
                    phone_code,
                ));
            }
        }
        let barrier = Arc::new(Barrier::new(prepared.len()));
        let started = Instant::now();
        let tasks: Vec<_> = prepared
            .into_iter()
            .map(|(group, replica, user, phone, code, phone_code)| {
                let d = d.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let answer = d.login(replica, &code, &phone_code).await;
                    (
                        group,
                        Attempt {
                            replica,
                            user,
                            phone,
                            answer,
                            at: started.elapsed(),
                        },
                    )
                })
            })
            .collect();
        for task in tasks {
            let (group, attempt) = task.await.unwrap();
            if groups.len() <= group {
                groups.resize(group + 1, Vec::new());
            }
            groups[group].push(attempt);
        }
    }
    let (cert_after, bf_after) = d.cluster.conflict_counters().await;
    let (cert, bf) = (cert_after - cert_before, bf_after - bf_before);
    let slowest = groups
        .iter()
        .flatten()
        .map(|a| a.answer.took)
        .max()
        .unwrap();
    eprintln!(
        "galera conflicts: {} logins in {GROUPS} groups of {PER_GROUP} (one new phone each, \
         {WAVE} groups at a time): wsrep_local_cert_failures +{cert}, wsrep_local_bf_aborts +{bf}, \
         slowest login {slowest:.0?}",
        GROUPS * PER_GROUP
    );

    // Every response is a success.
    for attempt in groups.iter().flatten() {
        assert_eq!(
            attempt.answer.status, 200,
            "login on replica {} failed: {}",
            attempt.replica, attempt.answer.body
        );
    }
    // The conflicts really happened, and were retried.
    assert!(
        cert + bf > 0,
        "no certification failure or brute-force abort: the logins did not conflict"
    );
    // One user per phone on every node, the one every login of the group got;
    // exactly one login of each group created it; both openids link to it; one
    // session per login.
    for node in 0..3 {
        let rows = Rows::read(&d, node).await;
        for group in &groups {
            let phone = &group[0].phone;
            let user_id = rows
                .user_of_phone(phone)
                .unwrap_or_else(|| panic!("no user for phone {phone} on node {node}"));
            for attempt in group {
                assert_eq!(user_id_of(&attempt.answer), user_id, "node {node}");
                assert_eq!(
                    rows.identity_user.get(&openid_of(&attempt.answer)),
                    Some(&Some(user_id)),
                    "identity of {} on node {node}",
                    attempt.user
                );
            }
            let new_users = group
                .iter()
                .filter(|a| a.answer.body["is_new_user"] == true)
                .count();
            assert_eq!(
                new_users, 1,
                "logins of phone {phone} that created the user"
            );
            assert_eq!(rows.sessions.get(&user_id), Some(&PER_GROUP), "node {node}");
        }
    }
    d.assert_nodes_agree().await;

    // Refresh: concurrent refreshes of one token on the three replicas produce one
    // successor (the rotation wins once; the others are retries of the same
    // generation and get that same successor).
    let tokens: Vec<String> = groups
        .iter()
        .take(8)
        .map(|g| {
            g[0].answer.body["refresh_token"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let (cert_before, bf_before) = d.cluster.conflict_counters().await;
    let mut successors = Vec::new();
    for token in &tokens {
        let barrier = Arc::new(Barrier::new(6));
        let tasks: Vec<_> = (0..6)
            .map(|k| {
                let d = d.clone();
                let token = token.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    d.refresh(k % 3, &token).await
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for task in tasks {
            let answer = task.await.unwrap();
            assert_eq!(
                answer.status, 200,
                "a concurrent refresh failed: {}",
                answer.body
            );
            seen.insert(answer.body["refresh_token"].as_str().unwrap().to_owned());
        }
        assert_eq!(
            seen.len(),
            1,
            "concurrent refreshes produced {} successors",
            seen.len()
        );
        successors.extend(seen);
    }
    let (cert_after, bf_after) = d.cluster.conflict_counters().await;
    eprintln!(
        "galera refresh: {} tokens x 6 concurrent refreshes over 3 replicas, one successor each: \
         wsrep_local_cert_failures +{}, wsrep_local_bf_aborts +{}",
        tokens.len(),
        cert_after - cert_before,
        bf_after - bf_before
    );
    // The successor works on another replica; the rotated token is a retry there.
    let next = d.refresh(1, &successors[0]).await;
    assert_eq!(next.status, 200, "{}", next.body);

    // A session created on one replica is refreshed and logged out at once on the
    // others (causal reads: the other nodes apply the login before they answer).
    for round in 0..6 {
        let (user, phone) = (unique_user(), next_phone());
        let (code, phone_code) = d.codes(&user, &phone).await;
        let login = d.login(round % 3, &code, &phone_code).await;
        assert_eq!(login.status, 200, "{}", login.body);
        let token = login.body["refresh_token"].as_str().unwrap();
        let refreshed = d.refresh((round + 1) % 3, token).await;
        assert_eq!(
            refreshed.status, 200,
            "refresh right after the login: {}",
            refreshed.body
        );
        let successor = refreshed.body["refresh_token"].as_str().unwrap();
        let logout = d.logout((round + 2) % 3, successor).await;
        assert_eq!(
            logout.status, 200,
            "logout right after the refresh: {}",
            logout.body
        );
        assert_eq!(logout.body["sessions_revoked"], 1);
        // A logout on one replica is seen by the others at once.
        for replica in [round % 3, (round + 1) % 3] {
            let after = d.refresh(replica, successor).await;
            assert_eq!(after.status, 401, "{}", after.body);
            assert_eq!(after.reason(), "SESSION_REVOKED", "{}", after.body);
        }
    }

    // A logout on one replica is seen by verification on the others: each
    // replica's revocation cache polls the revocation feed of its own node.
    let (user, phone) = (unique_user(), next_phone());
    let (code, phone_code) = d.codes(&user, &phone).await;
    let login = d.login(0, &code, &phone_code).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let access = login.body["access_token"].as_str().unwrap();
    for replica in 0..3 {
        assert_eq!(verify_on(&d, replica, &verifier, access).await, Ok(()));
    }
    let logout = d
        .logout(1, login.body["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(logout.status, 200, "{}", logout.body);
    let logged_out = Instant::now();
    let mut seen_after = Vec::new();
    for replica in [2, 0] {
        loop {
            match verify_on(&d, replica, &verifier, access).await {
                Err(reason) if reason == "TOKEN_REVOKED" => break,
                other => assert!(
                    logged_out.elapsed() < Duration::from_secs(10),
                    "replica {replica} still answers {other:?} 10 s after the logout on replica 1"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen_after.push((replica, logged_out.elapsed()));
    }
    eprintln!(
        "galera verification: a logout on replica 1 is TOKEN_REVOKED on replicas (2, 0) after {seen_after:?}"
    );

    // The revocation feed itself, read through another node, carries a logout.
    let (user, phone) = (unique_user(), next_phone());
    let (code, phone_code) = d.codes(&user, &phone).await;
    let login = d.login(0, &code, &phone_code).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let since = mp_auth::sessions::now_ms() - 5_000;
    let logout = d
        .logout(0, login.body["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(logout.status, 200, "{}", logout.body);
    let store = d.store_on(2).await;
    let revoked: Vec<RevokedSession> = store.sessions_revoked_since(since).await.unwrap();
    let user_id = user_id_of(&login);
    assert!(
        revoked.iter().any(|r| r.user_id.0 == user_id),
        "node 2's revocation feed misses the logout made on node 0: {revoked:?}"
    );
    d.assert_nodes_agree().await;
}

/// Load on every replica: `workers` loops per replica, each logging in new users
/// through its gateway until `stop` is set.
fn start_load(
    d: &Arc<Deployment>,
    workers: usize,
    stop: &Arc<std::sync::atomic::AtomicBool>,
    started: Instant,
) -> Vec<tokio::task::JoinHandle<Vec<Attempt>>> {
    let mut tasks = Vec::new();
    for replica in 0..d.replicas.len() {
        for _ in 0..workers {
            let d = d.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut attempts = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (user, phone) = (unique_user(), next_phone());
                    let (code, phone_code) = d.codes(&user, &phone).await;
                    let at = started.elapsed();
                    let answer = d.login(replica, &code, &phone_code).await;
                    if answer.status != 200 {
                        // Do not spin on a replica that fails fast.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    attempts.push(Attempt {
                        replica,
                        user,
                        phone,
                        answer,
                        at,
                    });
                }
                attempts
            }));
        }
    }
    tasks
}

#[tokio::test(flavor = "multi_thread")]
async fn a_galera_node_that_fails_under_load_takes_only_its_replica_out_until_it_rejoins() {
    let d = Arc::new(
        Deployment::start(|s| {
            s.database.acquire_timeout_ms = 1_000;
            s.grpc.health_check_interval_ms = mp_auth::config::Millis::clamped(200);
            // Commits on every node wait ~6 s while the cluster decides that a node is
            // gone (evs.suspect_timeout); those logins must succeed, not time out.
            s.gateway.backend_timeout_ms = mp_auth::config::Millis::clamped(20_000);
        })
        .await,
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t0 = Instant::now();
    let load = start_load(&d, 2, &stop, t0);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 1. Node 2 crashes (SIGKILL).
    let killed_at = t0.elapsed();
    d.cluster.kill(2).await;
    let not_serving_2 = d
        .wait_health(2, ServingStatus::NotServing, Duration::from_secs(10))
        .await;
    // The survivors give up on the dead node after evs.suspect_timeout (5 s);
    // until then their commits wait.
    let evicted = d
        .cluster
        .wait_cluster_size(0, 2, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restart_at = t0.elapsed();
    let rejoin = d.cluster.restart(2).await;
    let transfer = d.cluster.last_state_transfer(2);
    let serving_2 = d
        .wait_health(2, ServingStatus::Serving, Duration::from_secs(30))
        .await;
    let recovered_2 = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 2. Node 1 is cut off the cluster: it still takes connections but leaves
    //    the Primary component and refuses queries (1047).
    let isolated_at = t0.elapsed();
    d.cluster.isolate(1, true).await;
    let not_serving_1 = d
        .wait_health(1, ServingStatus::NotServing, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reconnect_at = t0.elapsed();
    d.cluster.isolate(1, false).await;
    let serving_1 = d
        .wait_health(1, ServingStatus::Serving, Duration::from_secs(30))
        .await;
    let recovered_1 = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 3. Node 0 is desynced (as by a backup tool): it still answers, but lags.
    d.cluster.desync(0, true).await;
    let not_serving_0 = d
        .wait_health(0, ServingStatus::NotServing, Duration::from_secs(10))
        .await;
    d.cluster.desync(0, false).await;
    let serving_0 = d
        .wait_health(0, ServingStatus::Serving, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut attempts = Vec::new();
    for task in load {
        attempts.extend(task.await.unwrap());
    }

    let end = t0.elapsed();
    let down_2 = killed_at..recovered_2;
    let down_1 = isolated_at..recovered_1;
    // From these instants on the replica says NOT_SERVING.
    let out_2 = killed_at + not_serving_2;
    let out_1 = isolated_at + not_serving_1;
    let ok = |a: &&Attempt| a.answer.status == 200;
    let in_window = |r: usize, from: Duration, to: Duration| {
        attempts
            .iter()
            .filter(move |a| a.replica == r && a.at >= from && a.at < to)
    };

    // The timeline first, so that a failure below comes with it.
    eprintln!(
        "galera failover: node 2 killed at {killed_at:.1?}, restarted at {restart_at:.1?}, \
         replica 2 SERVING again at {recovered_2:.1?}; node 1 isolated at {isolated_at:.1?}, \
         back in at {reconnect_at:.1?}, replica 1 SERVING again at {recovered_1:.1?}; end {end:.1?}"
    );
    for second in 0..=end.as_secs() {
        let from = Duration::from_secs(second);
        let to = from + Duration::from_secs(1);
        let cells: Vec<String> = (0..3)
            .map(|r| {
                let all: Vec<&Attempt> = in_window(r, from, to).collect();
                let good = all.iter().filter(|a| a.answer.status == 200).count();
                let max = all.iter().map(|a| a.answer.took).max().unwrap_or_default();
                format!(
                    "r{r} {good:>3} ok {:>3} failed max {max:>6.0?}",
                    all.len() - good
                )
            })
            .collect();
        eprintln!("  t={second:>3}s  {}", cells.join(" | "));
    }

    // Failures are typed: 503 DATABASE_UNAVAILABLE, never INTERNAL, a gateway
    // timeout or a hang; and only on the replica whose node is out, while it is.
    let mut failures = [0usize; 3];
    let mut slowest_not_serving = Duration::ZERO;
    let mut slowest_in_flight = Duration::ZERO;
    for a in attempts.iter().filter(|a| a.answer.status != 200) {
        assert_eq!(
            (a.answer.status, a.answer.reason()),
            (503, "DATABASE_UNAVAILABLE"),
            "replica {} at {:?} after {:?}: {}",
            a.replica,
            a.at,
            a.answer.took,
            a.answer.body
        );
        let (window, out) = match a.replica {
            2 => (&down_2, out_2),
            1 => (&down_1, out_1),
            _ => panic!("replica 0 failed a login at {:?}: {}", a.at, a.answer.body),
        };
        // The request was in flight at some point of the outage.
        assert!(
            a.at < window.end && a.at + a.answer.took > window.start,
            "replica {} failed at {:?}, outside its node's outage {window:?}: {}",
            a.replica,
            a.at,
            a.answer.body
        );
        failures[a.replica] += 1;
        if a.at < out {
            // In flight when the node failed: a commit waits until the node gives up
            // on its lost peers (evs.suspect_timeout, 5 s), then fails.
            slowest_in_flight = slowest_in_flight.max(a.answer.took);
        } else {
            slowest_not_serving = slowest_not_serving.max(a.answer.took);
        }
    }
    // The slowest success on the other replicas among requests in flight during
    // an outage: how long the cluster made them wait.
    let stall = |others: [usize; 2], window: &std::ops::Range<Duration>| {
        attempts
            .iter()
            .filter(|a| others.contains(&a.replica) && a.answer.status == 200)
            .filter(|a| a.at < window.end && a.at + a.answer.took > window.start)
            .map(|a| a.answer.took)
            .max()
            .unwrap_or_default()
    };
    let other_stall_2 = stall([0, 1], &down_2);
    let other_stall_1 = stall([0, 2], &down_1);
    eprintln!(
        "galera failover: {} logins, {} ok; failures per replica {failures:?}: slowest on a \
         NOT_SERVING replica {slowest_not_serving:.0?}, slowest in flight when its node failed \
         {slowest_in_flight:.1?}",
        attempts.len(),
        attempts.iter().filter(ok).count()
    );
    eprintln!(
        "galera failover: node 2 SIGKILL -> replica 2 NOT_SERVING in {not_serving_2:.2?}; \
         the other nodes dropped it after {:.2?}; slowest login on the other replicas \
         meanwhile {other_stall_2:.2?}; restart \
         (--wsrep-recover + {transfer}) Synced in {rejoin:.2?}, replica 2 SERVING {serving_2:.2?} \
         later (outage seen by clients {:.1?}, of which {:.1?} down on purpose)",
        not_serving_2 + evicted,
        recovered_2 - killed_at,
        restart_at - killed_at
    );
    eprintln!(
        "galera failover: node 1 isolated (gmcast.isolate=1) -> replica 1 NOT_SERVING in \
         {not_serving_1:.2?}; slowest login on the other replicas meanwhile {other_stall_1:.2?}; \
         back in -> SERVING in {serving_1:.2?}"
    );
    eprintln!(
        "galera failover: node 0 desynced -> replica 0 NOT_SERVING in {not_serving_0:.2?}, \
         resynced -> SERVING in {serving_0:.2?}"
    );

    assert!(
        slowest_not_serving < Duration::from_secs(3),
        "a login failing on a NOT_SERVING replica took {slowest_not_serving:?}"
    );
    assert!(
        slowest_in_flight < Duration::from_secs(15),
        "a login in flight when its node failed took {slowest_in_flight:?}"
    );
    assert!(
        failures[2] > 0,
        "no login reached replica 2 while its node was down"
    );
    assert!(
        failures[1] > 0,
        "no login reached replica 1 while its node was isolated"
    );
    // The others kept serving through each outage; and each replica serves again.
    for r in [0, 1] {
        assert!(
            in_window(r, out_2, restart_at).filter(ok).count() > 0,
            "replica {r} served nothing while node 2 was down"
        );
    }
    for r in [0, 2] {
        assert!(
            in_window(r, out_1, reconnect_at).filter(ok).count() > 0,
            "replica {r} served nothing while node 1 was isolated"
        );
    }
    assert!(
        in_window(2, recovered_2, isolated_at).filter(ok).count() > 0,
        "replica 2 after rejoining"
    );
    assert!(
        in_window(1, recovered_1, end).filter(ok).count() > 0,
        "replica 1 after rejoining"
    );

    // Nothing lost or half-written: every success is in the database with its
    // identity and its session, on every node; a failed login left either nothing
    // or all of it (a COMMIT whose answer was lost with the node).
    for node in 0..3 {
        let rows = Rows::read(&d, node).await;
        let mut complete_failures = 0;
        for a in &attempts {
            let user_id = rows.user_of_phone(&a.phone);
            if a.answer.status == 200 {
                let id = user_id_of(&a.answer);
                assert_eq!(user_id, Some(id), "node {node} lost the user of a success");
                assert_eq!(
                    rows.identity_user.get(&openid_of(&a.answer)),
                    Some(&Some(id)),
                    "node {node}"
                );
                assert_eq!(rows.sessions.get(&id), Some(&1), "node {node}");
            } else if let Some(id) = user_id {
                complete_failures += 1;
                assert_eq!(
                    rows.sessions.get(&id),
                    Some(&1),
                    "half-written login on node {node}"
                );
                assert!(
                    rows.identity_user.values().any(|u| *u == Some(id)),
                    "half-written login on node {node}: a user without its identity"
                );
            }
        }
        if node == 0 {
            eprintln!(
                "galera failover: rows checked on 3 nodes; {complete_failures} failed logins had committed completely"
            );
        }
    }
    d.assert_nodes_agree().await;
}

/// Galera aborts a local transaction that conflicts with a write set replicated
/// from another node (a brute-force abort). Sent statement by statement, the abort
/// is reported (deadlock) and the store retries; inside one multi-statement request
/// it is not: the rest of the request runs in autocommit mode and the closing
/// COMMIT succeeds. Hence logins on Galera run statement by statement.
#[tokio::test(flavor = "multi_thread")]
async fn a_galera_transaction_aborted_midway_is_reported_statement_by_statement_but_not_inside_a_batch_so_logins_there_are_retried()
 {
    use diesel_async::{AsyncConnection, AsyncMysqlConnection, SimpleAsyncConnection};
    use mp_auth::{
        domain::{AppId, OpenId, Phone},
        store::{LoginRecord, NewSession},
    };
    init_test_log();
    let cluster = GaleraCluster::start(2).await;
    let url = cluster.create_database().await;
    let database = url.rsplit('/').next().unwrap().to_owned();
    let bf_aborts = || async {
        cluster
            .status(0, "wsrep_local_bf_aborts")
            .await
            .parse::<u64>()
            .unwrap()
    };

    // 1. The server's behaviour: one multi-statement request on node 0, whose
    //    transaction node 1's update aborts while it sleeps.
    cluster
        .sql(
            0,
            &format!(
                "USE `{database}`; CREATE TABLE counter (id INT PRIMARY KEY, v INT NOT NULL); \
                 CREATE TABLE notes (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(16) NOT NULL); \
                 INSERT INTO counter VALUES (1, 0)"
            ),
        )
        .await;
    let aborts_before = bf_aborts().await;
    let batch = {
        let url = url.clone();
        tokio::spawn(async move {
            let mut conn = AsyncMysqlConnection::establish(&url).await.unwrap();
            conn.batch_execute(
                "BEGIN; UPDATE counter SET v = v + 100 WHERE id = 1; DO SLEEP(2); \
                 INSERT INTO notes (note) VALUES ('after'); COMMIT",
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster
        .sql(
            1,
            &format!("UPDATE `{database}`.counter SET v = v + 1 WHERE id = 1"),
        )
        .await;
    let answered = batch.await.unwrap();
    assert!(
        bf_aborts().await > aborts_before,
        "node 1's update did not abort the batch's transaction"
    );
    let held = cluster
        .sql(
            0,
            &format!(
                "SET SESSION wsrep_sync_wait = 1; USE `{database}`; \
                 SELECT v FROM counter; SELECT COUNT(*) FROM notes"
            ),
        )
        .await;
    let held: Vec<u64> = held.lines().map(|l| l.parse().unwrap()).collect();
    // The request answered success, the UPDATE of its transaction is gone (v = 1:
    // only node 1's +1), and the INSERT after it was committed anyway (outside the
    // transaction; on MariaDB 10.11 even twice). If Galera starts reporting the
    // abort here, logins on Galera could use the batch again.
    assert!(
        answered.is_ok() && held[0] == 1 && held[1] >= 1,
        "batch answered {answered:?}; counter v = {}, notes = {}",
        held[0],
        held[1]
    );
    eprintln!(
        "galera batch: answered {answered:?}, its UPDATE lost (v = {}), its later INSERT committed {} time(s)",
        held[0], held[1]
    );

    // 2. The login transaction on Galera: node 0 takes 2 s over each session insert,
    //    with the user row locked by the login's upsert; node 1 updates that row
    //    meanwhile. The abort is reported, the login is retried, and its answer is
    //    what the cluster holds.
    let store = Store::connect(
        &SecretString::from(url.clone()),
        &crate::db::test_settings(),
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let (app, openid) = (
        AppId::parse("wxgalera0001").unwrap(),
        OpenId::parse("o-galera").unwrap(),
    );
    let digits = next_phone();
    let phone = Phone::new("86", &digits).unwrap();
    let now = mp_auth::sessions::now_ms();
    let session = |id: &str| NewSession {
        id: id.to_owned(),
        created_at_ms: now,
        idle_expires_at_ms: now + 3_600_000,
        expires_at_ms: now + 7_200_000,
    };
    let login = |store: Store, session: NewSession| {
        let (app, openid, phone) = (app.clone(), openid.clone(), phone.clone());
        tokio::spawn(async move {
            store
                .record_login(&LoginRecord {
                    app_id: &app,
                    openid: &openid,
                    unionid: None,
                    phone: &phone,
                    sealed_session_key: b"sealed-key-bytes",
                    session_key_expires_at_ms: now + 3_600_000,
                    session: Some(&session),
                    now_ms: now,
                })
                .await
        })
    };
    let created = login(store.clone(), session("galera-session-1"))
        .await
        .unwrap()
        .unwrap();
    assert!(created.is_new_user);
    cluster
        .sql(
            0,
            &format!(
                "USE `{database}`; CREATE TRIGGER slow_session AFTER INSERT ON sessions \
                 FOR EACH ROW DO SLEEP(2)"
            ),
        )
        .await;
    let aborts_before = bf_aborts().await;
    let second = login(store.clone(), session("galera-session-2"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster
        .sql(
            1,
            &format!(
                "UPDATE `{database}`.users SET login_count = login_count + 1 \
                 WHERE phone = '+86{digits}'"
            ),
        )
        .await;
    let outcome = second
        .await
        .unwrap()
        .expect("the aborted login is retried and succeeds");
    assert!(
        bf_aborts().await > aborts_before,
        "node 1's write did not abort the login on node 0"
    );
    assert_eq!(outcome.user_id, created.user_id);
    assert!(!outcome.is_new_user);
    // Both logins and node 1's update are counted; both sessions exist; on both nodes.
    for node in 0..2 {
        let rows = cluster
            .sql(
                node,
                &format!(
                    "SET SESSION wsrep_sync_wait = 1; USE `{database}`; \
                     SELECT login_count FROM users WHERE phone = '+86{digits}'; \
                     SELECT id FROM sessions ORDER BY id"
                ),
            )
            .await;
        assert_eq!(
            rows.lines().collect::<Vec<_>>(),
            ["3", "galera-session-1", "galera-session-2"],
            "node {node}"
        );
    }
}
