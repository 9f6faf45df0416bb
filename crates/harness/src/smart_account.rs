//! A Smart Account in Cisco's Smart Software Manager, as the CML test servers register with it:
//! the seats held per product instance, and what happened to them. Several servers can share one
//! account, as a fleet's workers share a customer's account, so a seat a worker leaks (stopped
//! while registered, or deregistered only locally) shows here and can make a later registration
//! fail for want of seats.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

/// One Smart Account; cheap to clone, every clone is the same ledger.
#[derive(Clone, Debug, Default)]
pub struct SmartAccount {
    ledger: Arc<Mutex<Ledger>>,
}

#[derive(Debug, Default)]
struct Ledger {
    /// How many product instances may hold a seat at once; unlimited when `None`.
    seats: Option<usize>,
    /// product instance (`udi.product_uuid`) -> the product license it holds a seat for.
    held: BTreeMap<String, String>,
    /// Registrations that got (or kept) a seat, per product instance.
    registrations: BTreeMap<String, u32>,
    history: Vec<AccountEvent>,
}

/// One operation on the account, as Cisco's side saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountEvent {
    pub at: jiff::Timestamp,
    pub product_instance: String,
    pub operation: AccountOperation,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountOperation {
    /// A seat taken (or kept, on a re-registration) for this product license.
    Registered { product: String },
    /// No seat given: the reason the product instance reports as its failure.
    Refused { reason: String },
    /// Deregistered with Cisco: the seat is free again.
    Deregistered,
    /// A person removed the product instance in the Smart Software Manager: the only cure for
    /// a leaked seat.
    RemovedByHand,
}

/// Why a registration finds no seat; the product instance reports it as its failure.
pub const NO_SEATS: &str = "No available licenses in the Virtual Account";

impl SmartAccount {
    /// An account with as many seats as anyone asks for.
    pub fn new() -> SmartAccount {
        SmartAccount::default()
    }

    /// An account that gives at most `seats` product instances a seat at once.
    pub fn with_seats(seats: usize) -> SmartAccount {
        let account = SmartAccount::default();
        account.ledger().seats = Some(seats);
        account
    }

    /// The seats held now: product instance -> product license.
    pub fn held(&self) -> BTreeMap<String, String> {
        self.ledger().held.clone()
    }

    /// Registrations that got or kept a seat, per product instance.
    pub fn registrations(&self) -> BTreeMap<String, u32> {
        self.ledger().registrations.clone()
    }

    /// Every operation so far, oldest first.
    pub fn history(&self) -> Vec<AccountEvent> {
        self.ledger().history.clone()
    }

    /// What a person does in the Smart Software Manager for a leaked seat: removes the product
    /// instance. Whether it held a seat.
    pub fn remove_by_hand(&self, product_instance: &str) -> bool {
        let mut ledger = self.ledger();
        let held = ledger.held.remove(product_instance).is_some();
        ledger.record(product_instance, AccountOperation::RemovedByHand);
        held
    }

    /// A registration reaching Cisco: a seat for `product`, unless the account has none left.
    /// A product instance that already holds one keeps it (re-registration).
    pub(crate) fn take_seat(&self, product_instance: &str, product: &str) -> Result<(), String> {
        let mut ledger = self.ledger();
        let full = ledger.seats.is_some_and(|n| ledger.held.len() >= n);
        if full && !ledger.held.contains_key(product_instance) {
            let reason = NO_SEATS.to_owned();
            ledger.record(
                product_instance,
                AccountOperation::Refused {
                    reason: reason.clone(),
                },
            );
            return Err(reason);
        }
        ledger
            .held
            .insert(product_instance.to_owned(), product.to_owned());
        *ledger
            .registrations
            .entry(product_instance.to_owned())
            .or_default() += 1;
        ledger.record(
            product_instance,
            AccountOperation::Registered {
                product: product.to_owned(),
            },
        );
        Ok(())
    }

    /// A deregistration reaching Cisco: the seat is free.
    pub(crate) fn free_seat(&self, product_instance: &str) {
        let mut ledger = self.ledger();
        ledger.held.remove(product_instance);
        ledger.record(product_instance, AccountOperation::Deregistered);
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().expect("smart account ledger")
    }
}

impl Ledger {
    fn record(&mut self, product_instance: &str, operation: AccountOperation) {
        self.history.push(AccountEvent {
            at: jiff::Timestamp::now(),
            product_instance: product_instance.to_owned(),
            operation,
        });
    }
}
