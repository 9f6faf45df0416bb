//! Token buckets that mirror EC2's request limits, shared by all reconciles of a region.
//!
//! Levels are kept in integer nano-tokens on tokio's clock, so the client-side buckets here and
//! the simulated cloud's server-side buckets agree exactly, also under a paused test clock.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use tokio::time::Instant;

const NANO: u128 = 1_000_000_000;

/// One bucket: `burst` tokens at most, refilled at `per_second`.
#[derive(Debug)]
pub struct TokenBucket {
    burst: u32,
    per_second: u32,
    state: Mutex<Level>,
    /// Queues waiters so they are served in order instead of all polling.
    queue: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct Level {
    nano_tokens: u128,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket. `per_second` must be at least 1.
    pub fn new(burst: u32, per_second: u32) -> TokenBucket {
        TokenBucket {
            burst,
            per_second: per_second.max(1),
            state: Mutex::new(Level {
                nano_tokens: u128::from(burst) * NANO,
                at: Instant::now(),
            }),
            queue: tokio::sync::Mutex::new(()),
        }
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Takes a token if one is there; otherwise says how long until one will be.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let mut level = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(level.at).as_nanos();
        let cap = u128::from(self.burst) * NANO;
        level.nano_tokens = (level.nano_tokens + elapsed * u128::from(self.per_second)).min(cap);
        level.at = now;
        if level.nano_tokens >= NANO {
            level.nano_tokens -= NANO;
            Ok(())
        } else {
            let missing = NANO - level.nano_tokens;
            let nanos = missing.div_ceil(u128::from(self.per_second));
            Err(Duration::from_nanos(
                u64::try_from(nanos).unwrap_or(u64::MAX),
            ))
        }
    }

    /// Waits for a token, in turn with other waiters.
    pub async fn acquire(&self) {
        let _turn = self.queue.lock().await;
        while let Err(wait) = self.try_acquire() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The bucket a cloud operation draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::VariantArray, strum::IntoStaticStr)]
pub enum Operation {
    RunInstances,
    StartInstances,
    StopInstances,
    TerminateInstances,
    CreateTags,
    DescribeInstances,
    DescribeImages,
    DescribeInstanceTypes,
    DescribeSubnets,
}

impl Operation {
    /// Every value, in declaration order: derived, so a new variant is in it.
    pub const ALL: &'static [Operation] = <Operation as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    fn bucket(self) -> BucketClass {
        match self {
            Operation::RunInstances => BucketClass::RunInstances,
            Operation::StartInstances => BucketClass::StartInstances,
            Operation::TerminateInstances => BucketClass::TerminateInstances,
            Operation::StopInstances | Operation::CreateTags => BucketClass::OtherMutating,
            Operation::DescribeInstances
            | Operation::DescribeImages
            | Operation::DescribeInstanceTypes
            | Operation::DescribeSubnets => BucketClass::Describe,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum BucketClass {
    RunInstances,
    StartInstances,
    TerminateInstances,
    OtherMutating,
    Describe,
}

/// One request limit: `burst` calls at once, refilled at `per_second`; written `burst/per_second`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub per_second: u32,
}

impl Rate {
    pub const fn new(burst: u32, per_second: u32) -> Rate {
        Rate { burst, per_second }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.burst, self.per_second)
    }
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Rate, String> {
        let bad = || format!("{s:?}: expected BURST/PER_SECOND, e.g. 5/2, both at least 1");
        let (burst, per_second) = s.split_once('/').ok_or_else(bad)?;
        let burst: u32 = burst.trim().parse().map_err(|_| bad())?;
        let per_second: u32 = per_second.trim().parse().map_err(|_| bad())?;
        if burst == 0 || per_second == 0 {
            return Err(bad());
        }
        Ok(Rate { burst, per_second })
    }
}

/// An account's EC2 request limits. Real accounts get them raised on request, so they are
/// configuration; the client-side buckets and the simulated cloud's server side both use them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ec2Limits {
    pub run_instances: Rate,
    pub start_instances: Rate,
    pub terminate_instances: Rate,
    /// StopInstances, CreateTags and other mutating calls.
    pub mutating: Rate,
    /// Every Describe call.
    pub describe: Rate,
}

impl Default for Ec2Limits {
    /// EC2's published defaults: RunInstances and StartInstances 5 burst / 2 per s, describe calls
    /// 100 / 20, TerminateInstances 100 / 5, other mutating calls 50 / 5.
    fn default() -> Self {
        Ec2Limits {
            run_instances: Rate::new(5, 2),
            start_instances: Rate::new(5, 2),
            terminate_instances: Rate::new(100, 5),
            mutating: Rate::new(50, 5),
            describe: Rate::new(100, 20),
        }
    }
}

/// The buckets of one account and region.
#[derive(Debug)]
pub struct RateLimits {
    buckets: HashMap<BucketClass, TokenBucket>,
}

impl RateLimits {
    pub fn new(limits: &Ec2Limits) -> RateLimits {
        let bucket = |r: Rate| TokenBucket::new(r.burst, r.per_second);
        RateLimits {
            buckets: HashMap::from([
                (BucketClass::RunInstances, bucket(limits.run_instances)),
                (BucketClass::StartInstances, bucket(limits.start_instances)),
                (BucketClass::Describe, bucket(limits.describe)),
                (
                    BucketClass::TerminateInstances,
                    bucket(limits.terminate_instances),
                ),
                (BucketClass::OtherMutating, bucket(limits.mutating)),
            ]),
        }
    }

    /// EC2's published defaults ([`Ec2Limits::default`]).
    pub fn ec2_defaults() -> RateLimits {
        RateLimits::new(&Ec2Limits::default())
    }

    pub fn bucket(&self, op: Operation) -> &TokenBucket {
        // Every class has a bucket by construction.
        &self.buckets[&op.bucket()]
    }

    pub async fn acquire(&self, op: Operation) {
        self.bucket(op).acquire().await;
    }

    pub fn try_acquire(&self, op: Operation) -> Result<(), Duration> {
        self.bucket(op).try_acquire()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_steady_rate() {
        let bucket = TokenBucket::new(5, 2);
        let start = Instant::now();
        for _ in 0..5 {
            bucket.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        for _ in 0..10 {
            bucket.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(5), "then 2 per second");
    }

    #[tokio::test(start_paused = true)]
    async fn try_acquire_says_how_long_to_wait() {
        let bucket = TokenBucket::new(1, 4);
        assert!(bucket.try_acquire().is_ok());
        assert_eq!(bucket.try_acquire(), Err(Duration::from_millis(250)));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(bucket.try_acquire(), Err(Duration::from_millis(150)));
        tokio::time::advance(Duration::from_millis(150)).await;
        assert!(bucket.try_acquire().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn refill_stops_at_burst() {
        let bucket = TokenBucket::new(3, 10);
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            assert!(bucket.try_acquire().is_ok());
        }
        assert!(bucket.try_acquire().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_waiters_share_the_rate() {
        let bucket = std::sync::Arc::new(TokenBucket::new(2, 2));
        let start = Instant::now();
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let b = bucket.clone();
                tokio::spawn(async move { b.acquire().await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(2),
            "2 free, then 4 at 2/s"
        );
    }

    #[test]
    fn rates_read_as_burst_slash_per_second() {
        assert_eq!("5/2".parse::<Rate>(), Ok(Rate::new(5, 2)));
        assert_eq!(" 1000 / 50 ".parse::<Rate>(), Ok(Rate::new(1000, 50)));
        for bad in ["5", "5/0", "0/2", "a/b", "5/2/1", ""] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(Rate::new(5, 2).to_string(), "5/2");
    }

    #[tokio::test(start_paused = true)]
    async fn raised_limits_raise_every_bucket() {
        let raised = Ec2Limits {
            run_instances: Rate::new(1000, 100),
            ..Ec2Limits::default()
        };
        let limits = RateLimits::new(&raised);
        for _ in 0..1000 {
            assert!(limits.try_acquire(Operation::RunInstances).is_ok());
        }
        assert!(limits.try_acquire(Operation::RunInstances).is_err());
        assert_eq!(limits.bucket(Operation::StartInstances).burst(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn ec2_defaults_share_describe_bucket() {
        let limits = RateLimits::ec2_defaults();
        for _ in 0..60 {
            assert!(limits.try_acquire(Operation::DescribeInstances).is_ok());
        }
        for _ in 0..40 {
            assert!(limits.try_acquire(Operation::DescribeImages).is_ok());
        }
        assert!(limits.try_acquire(Operation::DescribeSubnets).is_err());
        assert!(limits.try_acquire(Operation::RunInstances).is_ok());
        assert_eq!(limits.bucket(Operation::StopInstances).burst(), 50);
        assert_eq!(limits.bucket(Operation::TerminateInstances).per_second(), 5);
    }
}
