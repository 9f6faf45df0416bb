//! Smart Licensing end to end: moto's EC2, the real control plane, and CML test servers built
//! from the 2.9 schemas that register with a shared Smart Account ledger.

use super::*;
use support::{
    cml_server::{INVALID_TOKEN, INVALID_TOKEN_REASON, VALID_TOKEN},
    smart_account::SmartAccount,
};

const TOKEN_SECRET: &str = "smart-licensing";

impl Harness {
    /// A template whose workers register with `token`; `licensing` overrides its fields.
    async fn licensed_template(&self, name: &str, port: u16, licensing: serde_json::Value) {
        let mut spec = self.template_spec();
        spec["cml"]["port"] = json!(port);
        spec["licensing"] = json!({
            "tokenSecretRef": {"name": TOKEN_SECRET},
            "registrationTimeout": "30s",
            "deregistrationTimeout": "20s"
        });
        for (k, v) in licensing.as_object().expect("object") {
            spec["licensing"][k] = v.clone();
        }
        self.create_template(name, spec).await;
    }

    /// A CML test server for a freshly launched worker: not registered, in its own account.
    async fn fresh_cml(&self) -> CmlServer {
        CmlServer::start_in(self._dir.path(), SmartAccount::new()).await
    }

    async fn token_secret(&self, token: &str) {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": TOKEN_SECRET, "labels": {"ccm.dev/usage": "cml"}},
            "stringData": {"token": token}
        }))
        .expect("secret");
        Api::<Secret>::namespaced(self.client.clone(), &self.ns.name)
            .create(&PostParams::default(), &secret)
            .await
            .expect("token secret");
    }

    /// Waits until `name` is Running, checking on the way that it never runs unlicensed.
    async fn wait_running_licensed(&self, name: &str, cml: &CmlServer) -> Worker {
        self.wait_for(name, "Running, and never before COMPLETED", |w| {
            let running = phase_of(w) == Some(WorkerPhase::Running);
            assert!(
                !running || cml.registration_status() == "COMPLETED",
                "Running while CML says {}",
                cml.registration_status()
            );
            running
        })
        .await
    }

    /// A worker `w1` of template `t` on a fresh CML, registered with a valid token and Running.
    async fn licensed_worker(prefix: &str) -> (Harness, CmlServer, Worker) {
        support::logs::capture();
        let h = Harness::new(prefix, |_| {}).await;
        let cml = h.fresh_cml().await;
        h.token_secret(VALID_TOKEN).await;
        h.licensed_template("t", cml.port, json!({})).await;
        h.worker("w1", "t").await;
        let w = h.wait_running_licensed("w1", &cml).await;
        (h, cml, w)
    }

    async fn delete_worker(&self, name: &str) {
        self.workers()
            .delete(name, &Default::default())
            .await
            .expect("delete");
    }

    async fn wait_terminated(&self, id: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.instance_state(id).await != "terminated" {
            assert!(
                tokio::time::Instant::now() < deadline,
                "instance {id} not terminated"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Everything the controller wrote about `name`: status and Events, as text.
    async fn everything_said(&self, name: &str) -> String {
        let worker = self.workers().get_opt(name).await.expect("get");
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns.name);
        let events = events.list(&ListParams::default()).await.expect("events");
        format!(
            "{}{}",
            serde_json::to_string(&worker).expect("json"),
            serde_json::to_string(&events.items).expect("json")
        )
    }
}

fn seat(w: &Worker) -> Option<SeatState> {
    w.status.as_ref()?.license.as_ref().map(|l| l.seat)
}

fn licensed(w: &Worker) -> Option<(String, String, String)> {
    let c = conditions::find(&w.status.as_ref()?.conditions, ConditionType::Licensed)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Polls the instance until it reaches `until`, asserting at every look that it left
/// `running` (or `pending`) only once the ledger held no seat: the seat went back first.
async fn seat_back_before(h: &Harness, instance: &str, account: &SmartAccount, until: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let state = h.instance_state(instance).await;
        let held = account.held().len();
        assert!(
            matches!(state.as_str(), "running" | "pending") || held == 0,
            "{state} while {held} seats are held"
        );
        if state == until {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "instance {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_worker_runs_once_licensed_gives_its_seat_back_before_stopping_and_registers_again() {
    let (h, cml, w) = Harness::licensed_worker("licstop").await;
    let account = cml.account();
    assert_eq!(account.held().len(), 1, "the ledger holds its seat");
    let license = w
        .status
        .as_ref()
        .and_then(|s| s.license.clone())
        .expect("license");
    assert_eq!(license.seat, SeatState::Held);
    assert_eq!(license.product_instance_id, Some(cml.product_instance()));
    assert_eq!(license.product.as_deref(), Some("CML_Personal"));
    assert_eq!(licensed(&w).map(|l| l.0).as_deref(), Some("True"));
    // The Personal product was set first (CML ran Enterprise), then the token.
    let calls: Vec<String> = cml.license_calls().iter().map(|c| c.path.clone()).collect();
    assert_eq!(
        calls,
        ["/licensing/product_license", "/licensing/registration"]
    );

    // A busy worker drains and keeps its seat: no deregistration while nodes run.
    let id = instance_id(&w);
    cml.set_usage(1, 3);
    h.wait_for("w1", "busy", |w| running_nodes(w) == Some(3))
        .await;
    h.set_desired("w1", "Stopped").await;
    h.wait_phase("w1", WorkerPhase::Draining).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(cml.license_calls().iter().all(|c| c.method != "DELETE"));
    assert_eq!(h.instance_state(&id).await, "running");
    // Empty: the seat goes back first, then StopInstances.
    cml.set_usage(0, 0);
    seat_back_before(&h, &id, &account, "stopped").await;
    let w = h.wait_phase("w1", WorkerPhase::Stopped).await;
    assert_eq!(seat(&w), Some(SeatState::Free));
    assert!(
        h.event_reasons("w1")
            .await
            .contains(&("Normal".into(), "LicenseDeregistered".into()))
    );

    // Started from the stopped pool: registers again before it runs.
    h.set_desired("w1", "Running").await;
    h.wait_running_licensed("w1", &cml).await;
    assert_eq!(account.held().len(), 1);
    assert_eq!(cml.registrations(), 2);
    let said = h.everything_said("w1").await;
    assert!(
        !said.contains(VALID_TOKEN),
        "the token leaked into status or Events"
    );
    let logs = support::logs::captured();
    assert!(logs.contains("w1"), "logs are captured");
    assert!(
        !logs.contains(VALID_TOKEN),
        "the token leaked into the logs"
    );
    assert_eq!(cml.violations(), Vec::<String>::new());
    h.finish().await;
}

#[tokio::test]
async fn a_deleted_worker_deregisters_before_it_is_terminated() {
    let (h, cml, w) = Harness::licensed_worker("licdelete").await;
    let id = instance_id(&w);
    let account = cml.account();
    h.delete_worker("w1").await;
    seat_back_before(&h, &id, &account, "terminated").await;
    h.wait_gone("w1").await;
    assert!(account.held().is_empty(), "{:?}", account.held());
    assert_eq!(cml.violations(), Vec::<String>::new());
    h.finish().await;
}

#[tokio::test]
async fn an_invalid_token_shows_cmls_reason_never_runs_and_fails_at_the_timeout() {
    let h = Harness::new("licinvalid", |_| {}).await;
    let cml = h.fresh_cml().await;
    h.token_secret(INVALID_TOKEN).await;
    h.licensed_template("t", cml.port, json!({"registrationTimeout": "6s"}))
        .await;
    h.worker("w1", "t").await;
    let w = h
        .wait_for("w1", "registration failed", |w| {
            licensed(w).is_some_and(|l| l.1 == "LicenseRegistrationFailed")
        })
        .await;
    let (_, _, message) = licensed(&w).expect("Licensed");
    assert!(message.contains(INVALID_TOKEN_REASON), "{message}");
    let w = h
        .wait_for("w1", "Failed", |w| {
            assert_ne!(phase_of(w), Some(WorkerPhase::Running));
            phase_of(w) == Some(WorkerPhase::Failed)
        })
        .await;
    let id = instance_id(&w);
    assert!(h.warned("w1", "LicenseRegistrationFailed").await);
    assert!(h.warned("w1", "LicenseRegistrationTimeout").await);
    // A failed worker's instance goes, once CML confirms it holds no seat.
    h.wait_for("w1", "seat confirmed free", |w| {
        seat(w) == Some(SeatState::Free)
    })
    .await;
    h.wait_terminated(&id).await;
    assert!(cml.account().held().is_empty());
    assert_eq!(cml.violations(), Vec::<String>::new());
    h.finish().await;
}

#[tokio::test]
async fn a_deregistration_cml_only_did_locally_is_reported_and_the_delete_completes() {
    let (h, cml, _) = Harness::licensed_worker("lic202").await;
    cml.set_deregistration_answer(Some(202));
    h.delete_worker("w1").await;
    h.wait_gone("w1").await;
    assert!(h.warned("w1", "LicenseSeatMayBeHeld").await);
    let notes = h.event_notes("LicenseSeatMayBeHeld").await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains(&cml.product_instance()) && n.contains(&cml.hostname())),
        "{notes:?}"
    );
    // CML's side is unregistered; the Smart Account still holds the seat, as it would.
    assert_eq!(cml.account().held().len(), 1);
    let metrics = h.ctx.as_ref().expect("ctx").metrics.encode();
    assert!(
        metrics.contains(
            r#"ccm_license_operations_total{operation="deregister",outcome="local_only"} 1"#
        ),
        "{metrics}"
    );
    h.finish().await;
}

#[tokio::test]
async fn over_the_seat_budget_a_worker_waits_in_provisioning_until_a_seat_frees() {
    let h = Harness::new("licbudget", |s| {
        s.license_seats = [("CML_Personal".to_owned(), 1)].into();
    })
    .await;
    h.token_secret(VALID_TOKEN).await;
    let first = h.fresh_cml().await;
    let other = CmlServer::start_in(h._dir.path(), first.account()).await;
    h.licensed_template("t1", first.port, json!({})).await;
    h.licensed_template("t2", other.port, json!({})).await;
    h.worker("w1", "t1").await;
    h.wait_running_licensed("w1", &first).await;
    h.worker("w2", "t2").await;
    let w2 = h
        .wait_for("w2", "waiting for a seat", |w| {
            licensed(w).is_some_and(|l| l.1 == "LicenseSeatsExhausted")
        })
        .await;
    assert_eq!(phase_of(&w2), Some(WorkerPhase::Provisioning));
    assert_eq!(other.registrations(), 0);
    assert!(h.warned("w2", "LicenseSeatsExhausted").await);
    h.delete_worker("w1").await;
    h.wait_running_licensed("w2", &other).await;
    assert_eq!(first.account().held().len(), 1);
    assert_eq!(first.violations(), Vec::<String>::new());
    assert_eq!(other.violations(), Vec::<String>::new());
    h.finish().await;
}

#[tokio::test]
async fn a_controller_killed_while_registering_or_deregistering_neither_registers_twice_nor_leaks()
{
    let mut h = Harness::new("lickill", |_| {}).await;
    let cml = h.fresh_cml().await;
    h.token_secret(VALID_TOKEN).await;
    cml.set_registration_delay(Duration::from_secs(4));
    h.licensed_template("t", cml.port, json!({})).await;
    h.worker("w1", "t").await;
    h.wait_for("w1", "registering", |w| {
        seat(w) == Some(SeatState::Registering)
    })
    .await;
    h.kill_controller();
    h.start_controller();
    h.wait_running_licensed("w1", &cml).await;
    assert_eq!(cml.registrations(), 1, "no second registration");

    cml.set_deregistration_answer(Some(409));
    h.delete_worker("w1").await;
    h.wait_for("w1", "deregistering", |w| {
        seat(w) == Some(SeatState::Deregistering)
    })
    .await;
    h.kill_controller();
    cml.set_deregistration_answer(None);
    h.start_controller();
    h.wait_gone("w1").await;
    assert!(
        cml.account().held().is_empty(),
        "{:?}",
        cml.account().held()
    );
    assert_eq!(cml.violations(), Vec::<String>::new());
    h.finish().await;
}
