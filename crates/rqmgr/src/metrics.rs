//! Prometheus metrics: counters the daemon keeps as mail moves, and gauges
//! read from the scheduler when a scrape asks (prometheus-client).
//!
//! Counters and histograms live as long as the process ([`Metrics`]; the
//! steps of a message's life call its methods). Gauges are built afresh
//! for each scrape from the scheduler's bounded views, in a registry of
//! that scrape only, so a destination that left the active queue has no
//! stale series; per-destination gauges cover only the top destinations
//! by waiting recipients and every throttled one.
//!
//! `rqmgr_deliveries_total{transport,status}` counts delivery requests by
//! their agent's reply: `sent` (status 0: every recipient is done, i.e.
//! delivered, or bounced by the agent itself), `deferred` (some recipient
//! waits), `failed` (no usable reply); requests to the `error` transport
//! that end with status 0 count as `bounced`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use rqmgr_sched::{DestinationSelect, DestinationState, FxHashMap, Scheduler};

/// Destinations with per-destination gauges, besides the throttled ones.
const DEFAULT_TOP: usize = 50;
/// Most per-destination series one scrape has.
const MAX_SERIES: usize = 1_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    transport: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabel {
    request: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    transport: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabels {
    transport: String,
    nexthop: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    postfix_version: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// How a delivery request ended (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeliveryStatus {
    Sent,
    Deferred,
    Failed,
}

/// The `status` labels, by [`TransportSeries::deliveries`]' index.
const STATUS_LABELS: [&str; 4] = ["sent", "deferred", "failed", "bounced"];

/// One transport's delivery series, kept at hand: the families would
/// otherwise build a label string and hash it under a lock twice per
/// delivery. The handles share their atomics with the families' series.
#[derive(Clone, Debug)]
struct TransportSeries {
    seconds: Histogram,
    /// By the index of the label in [`STATUS_LABELS`], once seen.
    deliveries: [Option<Counter>; 4],
}

fn delivery_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 18))
}

fn scan_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 12))
}

/// The process's counters; cheap to clone (shared atomics).
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    inserted: Family<QueueLabel, Counter>,
    removed: Counter,
    expired: Counter,
    deliveries: Family<DeliveryLabels, Counter>,
    delivery_seconds: Histograms<TransportLabel>,
    /// The series of each transport delivered to so far.
    by_transport: FxHashMap<Box<[u8]>, TransportSeries>,
    triggers: Family<RequestLabel, Counter>,
    scan_seconds: Histograms<QueueLabel>,
    admin_seconds: Histograms<EndpointLabel>,
    operator_changes: Family<ActionLabel, Counter>,
    postfix_version: String,
    role: &'static str,
    top: usize,
}

impl Metrics {
    /// Counters at zero, for a daemon serving `postfix_version` as `role`.
    pub(crate) fn new(postfix_version: &str, role: &'static str, top: Option<usize>) -> Metrics {
        Metrics {
            inserted: Family::default(),
            removed: Counter::default(),
            expired: Counter::default(),
            deliveries: Family::default(),
            delivery_seconds: Family::new_with_constructor(delivery_histogram),
            by_transport: FxHashMap::default(),
            triggers: Family::default(),
            scan_seconds: Family::new_with_constructor(scan_histogram),
            admin_seconds: Family::new_with_constructor(scan_histogram),
            operator_changes: Family::default(),
            postfix_version: postfix_version.to_owned(),
            role,
            top: top.unwrap_or(DEFAULT_TOP).min(MAX_SERIES),
        }
    }

    /// The Postfix release served.
    pub(crate) fn postfix_version(&self) -> &str {
        &self.postfix_version
    }

    /// `qmgr` or `oqmgr`.
    pub(crate) fn role(&self) -> &'static str {
        self.role
    }

    /// A message entered the active queue from `queue`.
    pub(crate) fn inserted(&self, queue: &'static str) {
        let label = QueueLabel { queue };
        self.inserted.get_or_create(&label).inc();
    }

    /// A message's file was removed (all done).
    pub(crate) fn removed(&self) {
        self.removed.inc();
    }

    /// A message expired and was returned.
    pub(crate) fn expired(&self) {
        self.expired.inc();
    }

    /// A delivery request ended with `status` after `seconds`.
    pub(crate) fn delivery(&mut self, transport: &[u8], status: DeliveryStatus, seconds: f64) {
        let idx = match status {
            DeliveryStatus::Sent if transport == b"error" => 3,
            DeliveryStatus::Sent => 0,
            DeliveryStatus::Deferred => 1,
            DeliveryStatus::Failed => 2,
        };
        if !self.by_transport.contains_key(transport) {
            let label = TransportLabel {
                transport: String::from_utf8_lossy(transport).into_owned(),
            };
            let seconds = self.delivery_seconds.get_or_create(&label).clone();
            self.by_transport.insert(
                transport.into(),
                TransportSeries {
                    seconds,
                    deliveries: Default::default(),
                },
            );
        }
        let Some(series) = self.by_transport.get_mut(transport) else {
            return;
        };
        series.seconds.observe(seconds);
        let counter = series.deliveries[idx].get_or_insert_with(|| {
            let labels = DeliveryLabels {
                transport: String::from_utf8_lossy(transport).into_owned(),
                status: STATUS_LABELS[idx],
            };
            self.deliveries.get_or_create(&labels).clone()
        });
        counter.inc();
    }

    /// A trigger letter arrived.
    pub(crate) fn trigger(&self, letter: u8) {
        let request = if letter.is_ascii_graphic() {
            (letter as char).to_string()
        } else {
            "other".to_owned()
        };
        self.triggers.get_or_create(&RequestLabel { request }).inc();
    }

    /// A scan of `queue` went through the whole directory.
    pub(crate) fn scan_done(&self, queue: &'static str, seconds: f64) {
        let label = QueueLabel { queue };
        self.scan_seconds.get_or_create(&label).observe(seconds);
    }

    /// The event loop spent `seconds` building an answer for `endpoint`.
    pub(crate) fn admin_answer(&self, endpoint: &str, seconds: f64) {
        let label = EndpointLabel {
            endpoint: endpoint.to_owned(),
        };
        self.admin_seconds.get_or_create(&label).observe(seconds);
    }

    /// An operator changed something (`rqmgrctl unthrottle`, ...).
    pub(crate) fn operator_change(&self, action: &str) {
        let label = ActionLabel {
            action: action.to_owned(),
        };
        self.operator_changes.get_or_create(&label).inc();
    }

    /// The text a scrape gets.
    pub(crate) fn encode(&self, sched: &Scheduler, control: ControlCounts) -> String {
        let mut r = Registry::default();
        self.register_counters(&mut r);
        register_gauges(&mut r, sched, self.top);
        register_control(&mut r, control);
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                postfix_version: self.postfix_version.clone(),
            })
            .set(1);
        r.register(
            "rqmgr_build_info",
            "rqmgr's version and the Postfix it serves",
            build,
        );
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }

    fn register_counters(&self, r: &mut Registry) {
        r.register(
            "rqmgr_messages_inserted",
            "Messages that entered the active queue, by the queue they came from",
            self.inserted.clone(),
        );
        r.register(
            "rqmgr_messages_removed",
            "Messages removed when every recipient was done",
            self.removed.clone(),
        );
        r.register(
            "rqmgr_messages_expired",
            "Messages returned to the sender as expired",
            self.expired.clone(),
        );
        r.register(
            "rqmgr_deliveries",
            "Delivery requests by transport and by the agent's reply (sent, deferred, bounced, failed)",
            self.deliveries.clone(),
        );
        r.register(
            "rqmgr_delivery_seconds",
            "Time from a delivery request to its reply",
            self.delivery_seconds.clone(),
        );
        r.register(
            "rqmgr_triggers",
            "Trigger requests by letter",
            self.triggers.clone(),
        );
        r.register(
            "rqmgr_operator_changes",
            "Changes operators made through the admin socket, by action",
            self.operator_changes.clone(),
        );
        r.register(
            "rqmgr_admin_answer_seconds",
            "Time the event loop spent building an admin answer, by endpoint",
            self.admin_seconds.clone(),
        );
        r.register(
            "rqmgr_queue_scan_seconds",
            "Time one scan of a queue directory took, from its request to its end",
            self.scan_seconds.clone(),
        );
    }
}

fn gauge(value: usize) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    g
}

/// What operators changed, for gauges (operator.rs).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ControlCounts {
    /// Suspensions in force.
    pub suspensions: usize,
    /// Limits set live and in force.
    pub limits: usize,
    /// Messages the suspensions hold in the deferred queue.
    pub held: usize,
    /// Deferred messages in the index.
    pub indexed: usize,
}

fn register_control(r: &mut Registry, c: ControlCounts) {
    let overrides = Family::<KindLabel, Gauge>::default();
    for (kind, n) in [("suspend", c.suspensions), ("limit", c.limits)] {
        overrides
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    r.register(
        "rqmgr_overrides",
        "Operators' overrides in force (rqmgrctl suspend, set), by kind",
        overrides,
    );
    r.register(
        "rqmgr_suspended_messages",
        "Messages that suspensions hold in the deferred queue",
        gauge(c.held),
    );
    r.register(
        "rqmgr_deferred_indexed_messages",
        "Deferred messages that rqmgrctl flush finds by destination",
        gauge(c.indexed),
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

fn register_gauges(r: &mut Registry, sched: &Scheduler, top: usize) {
    let t = sched.totals();
    r.register(
        "rqmgr_active_messages",
        "Messages in the active queue",
        gauge(t.messages),
    );
    r.register(
        "rqmgr_active_messages_limit",
        "qmgr_message_active_limit",
        gauge(t.message_limit),
    );
    r.register(
        "rqmgr_active_recipients",
        "Recipients in core",
        gauge(t.recipients),
    );
    r.register(
        "rqmgr_active_recipients_limit",
        "qmgr_message_recipient_limit",
        gauge(t.recipient_limit),
    );
    r.register(
        "rqmgr_ready_entries",
        "Entries in the active queue waiting only for a delivery agent",
        gauge(usize::try_from(sched.ready_backlog()).unwrap_or(usize::MAX)),
    );

    let busy = Family::<TransportLabel, Gauge>::default();
    let dead = Family::<TransportLabel, Gauge>::default();
    let throttles = Family::<TransportLabel, Counter>::default();
    let states = Family::<StateLabels, Gauge>::default();
    for tr in sched.transport_views() {
        let name = tr.name.to_string();
        let label = TransportLabel {
            transport: name.clone(),
        };
        busy.get_or_create(&label)
            .set(i64::try_from(tr.busy).unwrap_or(i64::MAX));
        dead.get_or_create(&label).set(i64::from(tr.dead));
        throttles.get_or_create(&label).inc_by(tr.throttles);
        let counts = sched.destination_counts(&tr.name);
        for (state, n) in [
            (DestinationState::Ready, counts.ready),
            (DestinationState::Throttled, counts.throttled),
            (DestinationState::Suspended, counts.suspended),
        ] {
            let label = StateLabels {
                transport: name.clone(),
                state: state.as_str().to_owned(),
            };
            states
                .get_or_create(&label)
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
    r.register(
        "rqmgr_transport_busy",
        "Deliveries in flight per transport",
        busy,
    );
    r.register(
        "rqmgr_transport_dead",
        "1 when the transport is dead (agent unavailable)",
        dead,
    );
    r.register(
        "rqmgr_destination_throttles",
        "Times a destination of the transport was throttled",
        throttles,
    );
    r.register(
        "rqmgr_destinations",
        "Destinations in core by transport and state",
        states,
    );

    let window = Family::<DestinationLabels, Gauge>::default();
    let todo = Family::<DestinationLabels, Gauge>::default();
    let dbusy = Family::<DestinationLabels, Gauge>::default();
    let throttled = Family::<DestinationLabels, Gauge>::default();
    for d in sched.destination_views(DestinationSelect::TopAndThrottled(top), MAX_SERIES) {
        let label = DestinationLabels {
            transport: d.transport.to_string(),
            nexthop: d.nexthop.to_string(),
        };
        window.get_or_create(&label).set(i64::from(d.window));
        todo.get_or_create(&label)
            .set(i64::try_from(d.todo_recipients).unwrap_or(i64::MAX));
        dbusy
            .get_or_create(&label)
            .set(i64::try_from(d.busy).unwrap_or(i64::MAX));
        throttled
            .get_or_create(&label)
            .set(i64::from(matches!(d.state, DestinationState::Throttled)));
    }
    r.register(
        "rqmgr_destination_window",
        "Concurrency window (top destinations and throttled ones)",
        window,
    );
    r.register(
        "rqmgr_destination_todo",
        "Recipients waiting (top destinations and throttled ones)",
        todo,
    );
    r.register(
        "rqmgr_destination_busy",
        "Deliveries in flight (top destinations and throttled ones)",
        dbusy,
    );
    r.register(
        "rqmgr_destination_throttled",
        "1 when throttled (top destinations and throttled ones)",
        throttled,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(m: &Metrics) -> String {
        m.encode(
            &Scheduler::new(rqmgr_sched::Config::default()),
            ControlCounts::default(),
        )
    }

    #[test]
    fn deliveries_are_counted_by_transport_and_status() {
        let mut m = Metrics::new("3.7.11", "qmgr", None);
        m.delivery(b"smtp", DeliveryStatus::Sent, 0.01);
        m.delivery(b"smtp", DeliveryStatus::Sent, 0.02);
        m.delivery(b"smtp", DeliveryStatus::Deferred, 0.5);
        m.delivery(b"error", DeliveryStatus::Sent, 0.001);
        m.delivery(b"error", DeliveryStatus::Failed, 0.001);
        let text = scrape(&m);
        for line in [
            "rqmgr_deliveries_total{transport=\"smtp\",status=\"sent\"} 2",
            "rqmgr_deliveries_total{transport=\"smtp\",status=\"deferred\"} 1",
            "rqmgr_deliveries_total{transport=\"error\",status=\"bounced\"} 1",
            "rqmgr_deliveries_total{transport=\"error\",status=\"failed\"} 1",
            "rqmgr_delivery_seconds_count{transport=\"smtp\"} 3",
            "rqmgr_delivery_seconds_count{transport=\"error\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("transport=\"error\",status=\"sent\""));
    }

    #[test]
    fn a_transport_name_that_is_not_utf8_gets_its_series() {
        let mut m = Metrics::new("3.7.11", "qmgr", None);
        m.delivery(b"sm\xfftp", DeliveryStatus::Sent, 0.01);
        m.delivery(b"sm\xfftp", DeliveryStatus::Sent, 0.01);
        let text = scrape(&m);
        assert!(
            text.contains("rqmgr_deliveries_total{transport=\"sm\u{fffd}tp\",status=\"sent\"} 2"),
            "{text}"
        );
    }
}
