//! Smart Licensing of one worker, decided from facts: whether it is licensed, what to ask its CML
//! next, and whether its seat must be given back before the machine stops or goes. A CML that
//! stops or goes while registered keeps its seat for good, so every stop and terminate waits for
//! the seat (up to `deregistrationTimeout`). A status CML reports that is not known to be final
//! is pending, never success.

use std::time::Duration;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `registration.status` once registered.
pub const COMPLETED: &str = "COMPLETED";
/// `registration.status` when the last attempt failed (the reason is in `register_time.failure`).
pub const FAILED: &str = "FAILED";
/// `registration.status` with no registration.
pub const NOT_REGISTERED: &str = "NOT_REGISTERED";
/// `authorization.status` once authorized.
pub const IN_COMPLIANCE: &str = "IN_COMPLIANCE";

/// What the worker's status remembers of its Smart Licensing seat.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SeatState {
    /// No seat: never registered, or its return was confirmed.
    #[default]
    Free,
    /// Registration requested and not confirmed: a seat may be being taken.
    Registering,
    /// Registered and authorized.
    Held,
    /// Deregistration requested and not confirmed.
    Deregistering,
    /// Its return could not be confirmed (CML answered 202, or could not be reached): only a
    /// person can release it in the Smart Software Manager.
    MayBeHeld,
}

impl SeatState {
    /// Whether the seat counts against the seat budget.
    pub fn counts(self) -> bool {
        self != SeatState::Free
    }

    /// The state as status and metrics spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            SeatState::Free => "Free",
            SeatState::Registering => "Registering",
            SeatState::Held => "Held",
            SeatState::Deregistering => "Deregistering",
            SeatState::MayBeHeld => "MayBeHeld",
        }
    }
}

/// The template's licensing, as the worker needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LicensePolicy {
    /// The product license to run, e.g. `CML_Enterprise`.
    pub product: String,
    /// Extra nodes (the `CML_NODE_COUNT` feature) for an Enterprise product.
    pub expansion_nodes: Option<u32>,
    /// Longest wait from the first registration request to a registered, authorized CML.
    pub registration_timeout: Duration,
    /// Longest wait for the seat's return before a stop or terminate goes on regardless.
    pub deregistration_timeout: Duration,
}

/// The default `deregistrationTimeout`, for a worker whose template no longer says.
pub const DEFAULT_DEREGISTRATION_TIMEOUT: Duration = Duration::from_secs(120);

/// The node-count feature as CML lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFeature {
    /// Its id, e.g. `regid.2019-10.com.cisco.CML_NODE_COUNT,1.0_...`.
    pub id: String,
    /// The count set now.
    pub in_use: Option<u32>,
}

/// What CML's `licensing` endpoint said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LicenseSeen {
    /// `registration.status`.
    pub registration: Option<String>,
    /// `authorization.status`.
    pub authorization: Option<String>,
    /// `product_license.active`.
    pub product: Option<String>,
    /// `registration.register_time.failure`.
    pub failure: Option<String>,
    /// The node-count feature, when listed.
    pub node_feature: Option<NodeFeature>,
}

impl LicenseSeen {
    fn registration_is(&self, status: &str) -> bool {
        self.registration.as_deref() == Some(status)
    }

    /// Registered and authorized: the only state that counts as licensed.
    pub fn licensed(&self) -> bool {
        self.registration_is(COMPLETED) && self.authorization.as_deref() == Some(IN_COMPLIANCE)
    }

    fn status_text(&self) -> String {
        format!(
            "registration {}, authorization {}",
            self.registration.as_deref().unwrap_or("unknown"),
            self.authorization.as_deref().unwrap_or("unknown")
        )
    }
}

/// What is known of the CML's licensing in this reconcile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LicenseView {
    /// CML was not asked (not running, not ready).
    #[default]
    NotAsked,
    /// CML was asked and could not say.
    Unknown {
        /// Why.
        why: String,
    },
    /// CML said this.
    Seen(LicenseSeen),
}

/// Everything licensing decisions look at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LicenseFacts {
    /// The template's licensing; `None` when it does not manage licenses.
    pub policy: Option<LicensePolicy>,
    /// What CML said.
    pub view: LicenseView,
    /// The seat as status remembers it.
    pub seat: SeatState,
    /// When the first registration request of this start was made.
    pub registration_started_at: Option<Timestamp>,
    /// When the current deregistration began.
    pub deregistration_started_at: Option<Timestamp>,
    /// No licensing call before this (backoff after a failure or a busy CML).
    pub retry_at: Option<Timestamp>,
    /// The seat budget lets this worker take a seat.
    pub permit: bool,
}

impl LicenseFacts {
    fn may_call(&self, now: Timestamp) -> bool {
        self.retry_at.is_none_or(|at| now >= at)
    }

    /// The seat as what CML said now leaves it.
    pub fn seat_now(&self) -> SeatState {
        seat_seen(self.seat, &self.view, self.policy.is_some())
    }
}

/// A licensing call to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LicenseStep {
    /// Transport (when set), product (when it differs), then the registration request.
    Register,
    /// Set the node-count feature.
    SetNodeCount {
        /// The feature's id.
        id: String,
        /// The count.
        count: u32,
    },
    /// Give the seat back.
    Deregister,
}

/// Why the worker's `Licensed` condition is what it is (a bounded set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::VariantArray, strum::IntoStaticStr)]
#[strum(prefix = "License")]
pub enum LicenseReason {
    /// Registered and authorized.
    Registered,
    /// Registration requested or running.
    Registering,
    /// CML's last registration attempt failed; retried with backoff.
    RegistrationFailed,
    /// CML refused a licensing request.
    RegistrationRefused,
    /// Not licensed within `registrationTimeout`.
    RegistrationTimeout,
    /// The seat budget has no seat for this worker.
    SeatsExhausted,
    /// Giving the seat back before a stop or terminate.
    Deregistering,
    /// No registration: no seat held.
    NotRegistered,
    /// The seat's return could not be confirmed.
    SeatMayBeHeld,
    /// CML's licensing could not be read.
    Unknown,
}

impl LicenseReason {
    /// Every value, in declaration order: derived, so a new variant is in it.
    pub const ALL: &'static [LicenseReason] = <LicenseReason as strum::VariantArray>::VARIANTS;

    /// The reason as a condition or Event spells it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The `Licensed` condition to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LicenseNote {
    /// Licensed or not.
    pub licensed: bool,
    /// Why.
    pub reason: LicenseReason,
    /// In words.
    pub message: String,
}

impl LicenseNote {
    fn new(licensed: bool, reason: LicenseReason, message: impl Into<String>) -> LicenseNote {
        LicenseNote {
            licensed,
            reason,
            message: message.into(),
        }
    }
}

/// Whether a worker whose CML is ready may take labs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Licensed, or licensing is not managed.
    Licensed,
    /// Not yet: take this step, if any, and look again soon.
    Pending(Option<LicenseStep>, LicenseNote),
    /// Not licensed within `registrationTimeout`.
    TimedOut(LicenseNote),
}

/// Whether a worker whose CML is ready is licensed, and the next call if it is not.
pub fn verdict(f: &LicenseFacts, now: Timestamp) -> Verdict {
    let Some(policy) = &f.policy else {
        return Verdict::Licensed;
    };
    let seen = match &f.view {
        LicenseView::Seen(seen) => seen,
        LicenseView::Unknown { why } => {
            let note = LicenseNote::new(false, LicenseReason::Unknown, why.clone());
            return timed_out(f, policy, now, &note).unwrap_or(Verdict::Pending(None, note));
        }
        LicenseView::NotAsked => {
            let note = LicenseNote::new(false, LicenseReason::Unknown, "CML not asked yet");
            return Verdict::Pending(None, note);
        }
    };
    if seen.licensed() {
        return expansion(f, policy, seen, now);
    }
    let note = pending_note(f, seen);
    if let Some(out) = timed_out(f, policy, now, &note) {
        return out;
    }
    if !f.permit && f.seat == SeatState::Free {
        let why = format!(
            "no seat of {} left in the seat budget (--license-seats): waiting for one before \
             registering",
            policy.product
        );
        return Verdict::Pending(
            None,
            LicenseNote::new(false, LicenseReason::SeatsExhausted, why),
        );
    }
    let retryable = seen.registration_is(NOT_REGISTERED) || seen.registration_is(FAILED);
    let step = (retryable && f.may_call(now)).then_some(LicenseStep::Register);
    Verdict::Pending(step, note)
}

fn pending_note(f: &LicenseFacts, seen: &LicenseSeen) -> LicenseNote {
    if seen.registration_is(FAILED) {
        let why = seen.failure.as_deref().unwrap_or("CML gave no reason");
        return LicenseNote::new(
            false,
            LicenseReason::RegistrationFailed,
            format!("registration failed: {why}; retrying with backoff"),
        );
    }
    let what = if seen.registration_is(NOT_REGISTERED) && f.registration_started_at.is_none() {
        "registering".to_owned()
    } else {
        format!("waiting for registration ({})", seen.status_text())
    };
    LicenseNote::new(false, LicenseReason::Registering, what)
}

/// Registration that began `registrationTimeout` ago and is not done fails the worker.
fn timed_out(
    f: &LicenseFacts,
    policy: &LicensePolicy,
    now: Timestamp,
    note: &LicenseNote,
) -> Option<Verdict> {
    let started = f.registration_started_at?;
    let deadline = started.checked_add(policy.registration_timeout).ok()?;
    (now >= deadline).then(|| {
        Verdict::TimedOut(LicenseNote::new(
            false,
            LicenseReason::RegistrationTimeout,
            format!(
                "not licensed within registrationTimeout {}: {}",
                crate::GoDuration::from(policy.registration_timeout),
                note.message
            ),
        ))
    })
}

/// Registered: the expansion nodes, when asked for, are the last step.
fn expansion(
    f: &LicenseFacts,
    policy: &LicensePolicy,
    seen: &LicenseSeen,
    now: Timestamp,
) -> Verdict {
    let Some(count) = policy.expansion_nodes else {
        return Verdict::Licensed;
    };
    let note = |why: String| LicenseNote::new(false, LicenseReason::Registering, why);
    match &seen.node_feature {
        Some(feature) if feature.in_use == Some(count) => Verdict::Licensed,
        Some(feature) => {
            let step = f.may_call(now).then(|| LicenseStep::SetNodeCount {
                id: feature.id.clone(),
                count,
            });
            let why = format!("registered; setting {count} expansion nodes");
            timed_out(f, policy, now, &note(why.clone()))
                .unwrap_or(Verdict::Pending(step, note(why)))
        }
        None => {
            let why = "registered, but CML lists no CML_NODE_COUNT feature for the expansion nodes"
                .to_owned();
            timed_out(f, policy, now, &note(why.clone()))
                .unwrap_or(Verdict::Pending(None, note(why)))
        }
    }
}

/// Whether a stop or terminate may go on now, as far as the seat is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// No seat is held (or its loss is already reported): go on.
    Open,
    /// The seat's return could not be confirmed within `deregistrationTimeout`: go on, and say
    /// that a seat may be held.
    OpenMayBeHeld(LicenseNote),
    /// Wait for the seat's return; take this step, if any.
    Hold {
        /// The call to make now.
        step: Option<LicenseStep>,
        /// When this deregistration began.
        since: Timestamp,
        /// What shows meanwhile.
        note: LicenseNote,
    },
}

/// Before a stop or terminate: give the seat back first, for `deregistrationTimeout` at most.
pub fn gate(f: &LicenseFacts, now: Timestamp) -> Gate {
    let seat = f.seat_now();
    if matches!(seat, SeatState::Free | SeatState::MayBeHeld) {
        return Gate::Open;
    }
    let timeout = f
        .policy
        .as_ref()
        .map_or(DEFAULT_DEREGISTRATION_TIMEOUT, |p| p.deregistration_timeout);
    let since = f.deregistration_started_at.unwrap_or(now);
    let overdue = since
        .checked_add(timeout)
        .is_ok_and(|deadline| now >= deadline);
    if overdue {
        let why = match &f.view {
            LicenseView::Unknown { why } => format!("CML could not be asked ({why})"),
            _ => "CML did not confirm it".to_owned(),
        };
        return Gate::OpenMayBeHeld(LicenseNote::new(
            false,
            LicenseReason::SeatMayBeHeld,
            format!(
                "the license seat's return was not confirmed within deregistrationTimeout {}: \
                 {why}; going on, and the seat may still be held",
                crate::GoDuration::from(timeout)
            ),
        ));
    }
    // The first attempt goes at once: a registration's backoff does not delay it.
    let first = f.deregistration_started_at.is_none();
    let step = (first || f.may_call(now)).then_some(LicenseStep::Deregister);
    Gate::Hold {
        step,
        since,
        note: LicenseNote::new(
            false,
            LicenseReason::Deregistering,
            "giving the license seat back before the instance stops or goes",
        ),
    }
}

/// The `Licensed` condition of a machine that stopped or went while its seat counted.
pub fn seat_lost_note() -> LicenseNote {
    LicenseNote::new(
        false,
        LicenseReason::SeatMayBeHeld,
        "the instance stopped or went while it held a license seat: the seat may still be held \
         in the Smart Software Manager",
    )
}

/// The seat as what CML said leaves it. Only a registration CML reports (or one we asked for)
/// takes a seat; only `NOT_REGISTERED` after a deregistration frees it. A seat that may be held
/// stays so until CML is registered again: a local `NOT_REGISTERED` is what a 202 leaves behind.
pub fn seat_seen(seat: SeatState, view: &LicenseView, managed: bool) -> SeatState {
    use SeatState::*;
    let LicenseView::Seen(seen) = view else {
        return seat;
    };
    if seen.licensed() {
        return if managed || seat != Free { Held } else { Free };
    }
    match seat {
        Held | Deregistering if seen.registration_is(NOT_REGISTERED) => Free,
        Free if managed && !seen.registration_is(NOT_REGISTERED) && seen.registration.is_some() => {
            // CML says a registration runs or ran: its seat may be taken.
            if seen.registration_is(FAILED) {
                Free
            } else {
                Registering
            }
        }
        other => other,
    }
}

/// How CML answered a licensing call, as far as the seat is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Accepted (204).
    Accepted,
    /// Another licensing operation runs (409).
    Busy,
    /// Refused (400 or 403), with CML's reason.
    Refused(String),
    /// Deregistered with Cisco (204).
    Freed,
    /// Deregistered locally only (202).
    LocalOnly,
    /// Not deregistered: lab nodes run.
    NodesRunning,
    /// Not deregistered: nothing was registered.
    NotRegistered,
    /// The call failed (unreachable, timeout, bad answer).
    Failed(String),
}

/// The seat after CML answered `step`.
pub fn seat_answered(seat: SeatState, step: &LicenseStep, answer: &Answer) -> SeatState {
    use SeatState::*;
    match (step, answer) {
        (LicenseStep::Register, Answer::Accepted | Answer::Busy | Answer::Failed(_)) => {
            // Any of these may leave a registration running.
            if seat == Free { Registering } else { seat }
        }
        (LicenseStep::Deregister, Answer::Freed) => Free,
        (LicenseStep::Deregister, Answer::LocalOnly) => MayBeHeld,
        (LicenseStep::Deregister, Answer::NotRegistered) if seat != MayBeHeld => Free,
        (LicenseStep::Deregister, Answer::NodesRunning) => seat,
        (LicenseStep::Deregister, _) if seat != MayBeHeld => Deregistering,
        _ => seat,
    }
}

/// How long to wait before the next licensing call after `attempts` calls: 5 s doubling to 2 m.
pub fn retry_delay(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(5);
    Duration::from_secs(5 << doublings).min(Duration::from_secs(120))
}

/// The `Licensed` condition outside registration and deregistration: what CML says now.
pub fn steady_note(f: &LicenseFacts, seat: SeatState) -> Option<LicenseNote> {
    if f.policy.is_none() && seat == SeatState::Free {
        return None;
    }
    if seat == SeatState::MayBeHeld {
        return Some(LicenseNote::new(
            false,
            LicenseReason::SeatMayBeHeld,
            "the seat's return was not confirmed: it may still be held in the Smart Software \
             Manager",
        ));
    }
    match &f.view {
        LicenseView::Seen(seen) if seen.licensed() => Some(LicenseNote::new(
            true,
            LicenseReason::Registered,
            format!(
                "registered as {}; {}",
                seen.product.as_deref().unwrap_or("an unknown product"),
                seen.status_text()
            ),
        )),
        LicenseView::Seen(seen) if seat == SeatState::Free => Some(LicenseNote::new(
            false,
            LicenseReason::NotRegistered,
            format!("no seat held ({})", seen.status_text()),
        )),
        LicenseView::Seen(seen) => Some(LicenseNote::new(
            false,
            LicenseReason::Registering,
            seen.status_text(),
        )),
        LicenseView::NotAsked if seat == SeatState::Free => Some(LicenseNote::new(
            false,
            LicenseReason::NotRegistered,
            "no seat held",
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
