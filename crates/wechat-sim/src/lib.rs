//! A faithful WeChat API simulator for dev mode, tests and benchmarks: the
//! server API a WeChat login service calls (`jscode2session`, `stable_token`,
//! `getuserphonenumber`) plus a `/_sim/` control API that plays the WeChat
//! client (wx.login, the phone button) and injects faults. It shares no code
//! with mp-auth: its encryption, errcodes and configuration are its own.
//!
//! Layout:
//! - [`config`]: the apps it knows and its timings ([`SimulatorConfig`]).
//! - `state`: the simulated WeChat, composed of
//!   `apps` (registered apps), `identities` (openids, unionids, phones),
//!   `sessions` (session keys and their rotation), `codes` (single-use login
//!   and phone codes), `tokens` (stable access tokens).
//! - [`errcode`]: WeChat's errcodes and errmsgs.
//! - [`crypto`]: the legacy phone payload (AES-128-CBC with the session_key).
//! - [`phone`]: phone numbers as the control API accepts them.
//! - `wechat_api`: the WeChat endpoints, byte-for-byte like the real ones,
//!   with [`faults`] applied by one wrapper.
//! - `control`: the `/_sim/` control API; [`wire`]: its JSON bodies.
//! - [`client`]: [`SimClient`], a typed client of the control API, with
//!   [`SimClient::press`] playing "wx.login + phone button".
//! - [`server`]: [`Simulator::start`] and [`RunningSimulator`].
//! - [`cli`]: the `wechat-sim` command (also `mp-auth wechat-sim`).

mod apps;
pub mod cli;
pub mod client;
mod codes;
pub mod config;
mod control;
pub mod crypto;
pub mod errcode;
pub mod faults;
mod identities;
pub mod phone;
mod random;
pub mod server;
mod sessions;
mod state;
mod sync;
mod tokens;
mod wechat_api;
pub mod wire;

pub use client::SimClient;
pub use config::{SimApp, SimulatorConfig};
pub use faults::{Fault, FaultEndpoint};
pub use server::{RunningSimulator, Simulator, base_url};
pub use wire::{MintedLogin, MintedPhone, Pressed, SimStats};
