//! The fake world outside the queue manager: delivery agents and master.
//!
//! Job: say, for each delivery request and each connection attempt, how
//! long it takes and how it ends. Behaviour is configured per destination
//! (next hop) and per transport, and outcomes are taken from a list in
//! turn (cycled), so a run is a pure function of its configuration: no
//! randomness lives here; property tests generate the lists instead.
//!
//! Invariants: an empty outcome list means "always succeed"; an empty
//! connect list means "always connect". The `retry` pseudo-transport
//! (error(8) deferring with a saved reason) has its own profile, because
//! its "destinations" are reasons, not hosts.
//!
//! Limits: latency is fixed per destination (no jitter), and an agent
//! reports one outcome for every recipient of a request, as Postfix's
//! agents do for a site problem; per-recipient mixed results are not
//! modelled.

use std::collections::HashMap;
use std::time::Duration;

use rqmgr_sched::{ByteString, Dsn};

/// How one delivery attempt ends, in delivery-agent terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentOutcome {
    /// Every recipient delivered (agent status 0).
    Success,
    /// Recipients deferred, but the agent did not blame the site (e.g. a
    /// 4xx reply to RCPT TO): positive concurrency feedback.
    Defer,
    /// The agent blamed the site (connect or handshake failure): DSN
    /// status 4.4.1 with this reason, negative feedback, and after enough
    /// failed cohorts a dead destination.
    SiteFailure(String),
    /// The agent died without a usable reply: no feedback either way.
    Crash,
}

/// How one attempt to connect to a transport's agent ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectOutcome {
    /// The agent announces itself ([`rqmgr_sched::Event::AgentReady`]).
    Ready,
    /// The connection is refused ([`rqmgr_sched::Event::AgentUnavailable`]):
    /// the whole transport goes dead for `transport_retry_time`.
    Refused(Dsn),
}

impl ConnectOutcome {
    /// A refusal with Postfix's usual words for a broken transport.
    pub fn refused() -> ConnectOutcome {
        ConnectOutcome::Refused(Dsn::new("4.3.0", "mail transport unavailable"))
    }
}

/// The behaviour of one destination's servers, as the agent sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestProfile {
    /// Time from request to reply.
    pub latency: Duration,
    /// Outcomes taken in turn, cycling; empty means always [`AgentOutcome::Success`].
    pub outcomes: Vec<AgentOutcome>,
}

impl DestProfile {
    /// Always succeeds after `latency`.
    pub fn ok(latency: Duration) -> DestProfile {
        DestProfile {
            latency,
            outcomes: Vec::new(),
        }
    }

    /// Always ends with `outcome` after `latency`.
    pub fn always(latency: Duration, outcome: AgentOutcome) -> DestProfile {
        DestProfile {
            latency,
            outcomes: vec![outcome],
        }
    }

    /// The outcome of the `n`th attempt (0-based) at this destination.
    pub fn outcome(&self, n: usize) -> AgentOutcome {
        if self.outcomes.is_empty() {
            AgentOutcome::Success
        } else {
            self.outcomes[n % self.outcomes.len()].clone()
        }
    }
}

/// The behaviour of one transport's agents and of master(8) spawning them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportProfile {
    /// Time from connection request to the agent's answer.
    pub connect_latency: Duration,
    /// Connect outcomes taken in turn, cycling; empty means always ready.
    pub connects: Vec<ConnectOutcome>,
    /// master.cf's maxproc: agent processes that may exist at once. A
    /// connection beyond it waits for a process to free up, exactly as
    /// qmgr's connect blocks in master's listen queue. None = no limit.
    pub process_limit: Option<usize>,
}

impl Default for TransportProfile {
    fn default() -> Self {
        TransportProfile {
            connect_latency: Duration::from_millis(1),
            connects: Vec::new(),
            process_limit: None,
        }
    }
}

impl TransportProfile {
    /// The outcome of the `n`th connection attempt (0-based).
    pub fn connect(&self, n: usize) -> ConnectOutcome {
        if self.connects.is_empty() {
            ConnectOutcome::Ready
        } else {
            self.connects[n % self.connects.len()].clone()
        }
    }
}

/// Every destination's and transport's behaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct World {
    /// Destinations not named in `dests`.
    pub default_dest: DestProfile,
    /// Per next hop (ASCII letters in lower case).
    pub dests: HashMap<ByteString, DestProfile>,
    /// Transports not named in `transports`.
    pub default_transport: TransportProfile,
    /// Per transport name.
    pub transports: HashMap<ByteString, TransportProfile>,
    /// The `retry` transport's error(8) agent: by default it defers every
    /// recipient with the saved reason, without blaming anyone.
    pub retry: DestProfile,
}

impl Default for World {
    /// Every destination answers successfully in one second; agents
    /// connect in a millisecond.
    fn default() -> Self {
        World {
            default_dest: DestProfile::ok(Duration::from_secs(1)),
            dests: HashMap::new(),
            default_transport: TransportProfile::default(),
            transports: HashMap::new(),
            retry: DestProfile::always(Duration::from_millis(10), AgentOutcome::Defer),
        }
    }
}

impl World {
    /// Sets one destination's behaviour (builder style).
    pub fn with_dest(mut self, nexthop: impl AsRef<[u8]>, profile: DestProfile) -> World {
        let key = nexthop.as_ref().to_ascii_lowercase();
        self.dests.insert(key.into(), profile);
        self
    }

    /// Sets one transport's behaviour (builder style).
    pub fn with_transport(
        mut self,
        transport: impl AsRef<[u8]>,
        profile: TransportProfile,
    ) -> World {
        self.transports.insert(transport.as_ref().into(), profile);
        self
    }

    /// The profile that answers a request for `nexthop` over `transport`.
    pub fn dest(&self, transport: &[u8], nexthop: &[u8]) -> &DestProfile {
        if transport == rqmgr_sched::RETRY_TRANSPORT.as_bytes() {
            return &self.retry;
        }
        self.dests
            .get(&nexthop.to_ascii_lowercase()[..])
            .unwrap_or(&self.default_dest)
    }

    /// The profile of a transport.
    pub fn transport(&self, transport: &[u8]) -> &TransportProfile {
        self.transports
            .get(transport)
            .unwrap_or(&self.default_transport)
    }
}
