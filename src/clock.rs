//! The service's one clock: wall-clock time as unix milliseconds (what rows and
//! sessions are stamped with) and unix seconds (what JWTs and WeChat's
//! watermarks carry). A clock before 1970 reads as 0, one past year 292 million
//! as `i64::MAX`: never a panic.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

/// Now, in unix seconds.
pub fn now_secs() -> u64 {
    unix_secs(SystemTime::now())
}

/// `t` in unix milliseconds.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `t` in unix seconds.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_before_the_epoch_read_as_zero_and_later_ones_as_their_offset() {
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1_500)), 1_500);
        assert_eq!(unix_secs(UNIX_EPOCH + Duration::from_millis(1_500)), 1);
        assert!(now_ms() > 1_700_000_000_000);
        assert!(now_secs() > 1_700_000_000);
    }
}
