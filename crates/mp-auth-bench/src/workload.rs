//! The workload: which users log in (returning or new), and their codes and phone
//! payloads, minted through the simulator's control API before the clock starts.

use futures::{StreamExt as _, TryStreamExt as _};
use rand::{Rng as _, seq::SliceRandom as _};
use wechat_sim::{Pressed, SimClient};

/// Which phone proof the requests carry, or refreshes instead of logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flow {
    /// `encryptedData` + `iv`, decrypted with the session key (the original product's traffic).
    Legacy,
    /// The new flow's phone code, exchanged with WeChat's getuserphonenumber.
    Code,
    /// Session refreshes: each request rotates the refresh token of one of the
    /// sessions opened (by phone-code logins) before the clock starts.
    Refresh,
}

/// A simulated WeChat user: the simulator's handle and the phone it owns (CN digits).
#[derive(Debug, Clone)]
pub struct User {
    /// The simulator's user handle.
    pub handle: String,
    /// CN mobile digits, e.g. `13800000042`.
    pub phone: String,
}

/// The returning population: user `i` is `bench-ret-<i>` with phone `138<i:08>`.
pub fn returning_user(i: usize) -> User {
    User {
        handle: format!("bench-ret-{i}"),
        phone: format!("138{:08}", i % 100_000_000),
    }
}

/// A source of never-seen phones: `15<9 digits>` from a random base, so runs on one
/// database rarely meet (a meeting only turns a "new" login into a returning one).
pub struct NewUsers {
    tag: u64,
    base: u64,
    next: u64,
}

impl NewUsers {
    /// A fresh source with a random base.
    pub fn new() -> Self {
        let mut rng = rand::rng();
        Self {
            tag: rng.random(),
            base: rng.random_range(0..1_000_000_000),
            next: 0,
        }
    }

    /// The next new user.
    pub fn next_user(&mut self) -> User {
        let n = (self.base + self.next) % 1_000_000_000;
        let user = User {
            handle: format!("bench-new-{:x}-{}", self.tag, self.next),
            phone: format!("15{n:09}"),
        };
        self.next += 1;
        user
    }
}

impl Default for NewUsers {
    fn default() -> Self {
        Self::new()
    }
}

/// The phone proof of one request.
#[derive(Debug, Clone)]
pub enum Proof {
    /// New flow.
    Code(String),
    /// Legacy flow.
    Encrypted {
        /// `encryptedData`.
        data: String,
        /// `iv`.
        iv: String,
    },
}

/// One ready-to-send login request.
#[derive(Debug, Clone)]
pub struct Item {
    /// The `wx.login` code.
    pub code: String,
    /// The phone proof.
    pub proof: Proof,
}

/// The users of one run: `returning_ratio` of them drawn (cyclically) from the
/// population, the rest new; shuffled so both kinds interleave.
pub fn plan(
    requests: usize,
    returning_ratio: f64,
    population: usize,
    new_users: &mut NewUsers,
) -> Vec<User> {
    let returning = if population == 0 {
        0
    } else {
        ((requests as f64) * returning_ratio.clamp(0.0, 1.0)).round() as usize
    };
    let mut users: Vec<User> = (0..returning)
        .map(|i| returning_user(i % population))
        .collect();
    users.extend((returning..requests).map(|_| new_users.next_user()));
    users.shuffle(&mut rand::rng());
    users
}

/// Mints a `wx.login` code then a phone payload for every user, `parallel` users at a
/// time. The order of `users` is kept.
pub async fn mint(
    sim: &SimClient,
    app_id: &str,
    flow: Flow,
    users: &[User],
    parallel: usize,
) -> anyhow::Result<Vec<Item>> {
    futures::stream::iter(users.iter())
        .map(|user| async move {
            let Pressed { login, phone } =
                sim.press(app_id, &user.handle, Some(&user.phone)).await?;
            let proof = match flow {
                // Sessions to refresh are opened by phone-code logins.
                Flow::Code | Flow::Refresh => Proof::Code(phone.code),
                Flow::Legacy => Proof::Encrypted {
                    data: phone.encrypted_data,
                    iv: phone.iv,
                },
            };
            anyhow::Ok(Item {
                code: login.code,
                proof,
            })
        })
        .buffered(parallel.max(1))
        .try_collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_mix_returning_and_new_users_in_the_requested_ratio() {
        let mut fresh = NewUsers::new();
        let users = plan(1000, 0.5, 300, &mut fresh);
        assert_eq!(users.len(), 1000);
        let returning = users
            .iter()
            .filter(|u| u.handle.starts_with("bench-ret-"))
            .count();
        assert_eq!(returning, 500);
        assert!(users.iter().all(|u| u.phone.len() == 11));
        let new_phones: std::collections::HashSet<_> = users
            .iter()
            .filter(|u| u.handle.starts_with("bench-new-"))
            .map(|u| u.phone.clone())
            .collect();
        assert_eq!(new_phones.len(), 500);
    }

    #[test]
    fn plans_without_a_population_have_only_new_users() {
        let users = plan(10, 0.5, 0, &mut NewUsers::new());
        assert!(users.iter().all(|u| u.handle.starts_with("bench-new-")));
    }
}
