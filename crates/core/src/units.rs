//! Memory and storage units, converted in one place. Templates and the planner count binary
//! gibibytes (GiB, 2^30 bytes: `capacity.memoryGiB`, what EC2 and CML report); the Control Plane
//! API's `memory_gb` and `storage_gb` are decimal gigabytes (GB, 10^9 bytes), as named.

const BYTES_PER_GB: u64 = 1_000_000_000;
const BYTES_PER_GIB: u64 = 1 << 30;

/// GiB in `gb` decimal gigabytes (a lab's needs, a worker's allocation).
pub fn gib_from_gb(gb: f64) -> f64 {
    gb * BYTES_PER_GB as f64 / BYTES_PER_GIB as f64
}

/// Decimal gigabytes in `gib` GiB.
pub fn gb_from_gib(gib: f64) -> f64 {
    gib * BYTES_PER_GIB as f64 / BYTES_PER_GB as f64
}

/// Whole decimal gigabytes in `gib` GiB, rounded down: what a worker offers the platform may
/// only be less than what it has, never more (the record's fields are integers).
pub fn whole_gb_from_gib(gib: u32) -> u32 {
    let gb = u64::from(gib) * BYTES_PER_GIB / BYTES_PER_GB;
    u32::try_from(gb).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gib_is_1_073_741_824_bytes_and_a_gb_10_to_the_9() {
        for (gib, gb) in [(0.0, 0.0), (1.0, 1.073_741_824), (192.0, 206.158_430_208)] {
            assert!((gb_from_gib(gib) - gb).abs() < 1e-9, "{gib} GiB");
            assert!((gib_from_gb(gb) - gib).abs() < 1e-9, "{gb} GB");
        }
        assert!((gib_from_gb(128.0) - 119.209_289_550_781_25).abs() < 1e-9);
    }

    #[test]
    fn whole_gb_are_rounded_down_never_up() {
        for (gib, gb) in [
            (0, 0),
            (1, 1),
            (192, 206),
            (500, 536),
            (1000, 1073),
            (1_953_125, 2_097_152),
            (u32::MAX, u32::MAX),
        ] {
            assert_eq!(whole_gb_from_gib(gib), gb, "{gib} GiB");
            assert!(f64::from(whole_gb_from_gib(gib)) <= gb_from_gib(f64::from(gib)));
        }
    }
}
