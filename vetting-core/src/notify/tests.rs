//! The registry: routing by kind and severity, a hanging target that does
//! not delay the caller and times out, a failing target that is logged
//! while the others still get theirs.

use std::sync::Mutex;

use super::*;

/// Keeps what it was sent.
#[derive(Default)]
struct Recorder {
    received: Mutex<Vec<Notification>>,
}

impl Recorder {
    fn kinds(&self) -> Vec<NotificationKind> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|notification| notification.kind)
            .collect()
    }
}

#[async_trait::async_trait]
impl Notifier for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    async fn send(&self, notification: &Notification) -> Result<(), NotifyError> {
        self.received.lock().unwrap().push(notification.clone());
        Ok(())
    }
}

/// Never answers; says when it was called.
struct Hanging {
    called: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl Notifier for Hanging {
    fn name(&self) -> &str {
        "hanging"
    }
    async fn send(&self, _notification: &Notification) -> Result<(), NotifyError> {
        self.called.notify_one();
        std::future::pending::<()>().await;
        Ok(())
    }
}

/// Always refused.
struct Refusing;

#[async_trait::async_trait]
impl Notifier for Refusing {
    fn name(&self) -> &str {
        "refusing"
    }
    async fn send(&self, _notification: &Notification) -> Result<(), NotifyError> {
        Err(NotifyError::Refused {
            target: "hooks.example.invalid".into(),
            status: 403,
            message: "webhook revoked".into(),
        })
    }
}

fn notification(kind: NotificationKind) -> Notification {
    Notification::new(kind, "run-1", 1, 1_000)
}

async fn wait_all(deliveries: Vec<Delivery>) -> Vec<(String, DeliveryOutcome)> {
    let mut outcomes = Vec::new();
    for delivery in deliveries {
        let target = delivery.target.clone();
        outcomes.push((target, delivery.wait().await));
    }
    outcomes
}

#[test]
fn each_kind_has_its_default_severity() {
    let severities: Vec<(NotificationKind, Severity)> = NotificationKind::ALL
        .iter()
        .map(|kind| (*kind, kind.default_severity()))
        .collect();
    assert_eq!(
        severities,
        vec![
            (NotificationKind::StageFailed, Severity::Critical),
            (NotificationKind::SpecMismatch, Severity::Warning),
            (NotificationKind::HoldingOpened, Severity::Warning),
            (NotificationKind::RunCompleted, Severity::Info),
            (NotificationKind::HostLost, Severity::Critical),
        ]
    );
    assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
    assert_eq!(
        notification(NotificationKind::HostLost).severity,
        Severity::Critical
    );
}

#[tokio::test]
async fn targets_get_only_what_their_route_lets_through() {
    let notifiers = Notifiers::new();
    let everything = Arc::new(Recorder::default());
    let failures = Arc::new(Recorder::default());
    let critical = Arc::new(Recorder::default());
    notifiers.add("everything", everything.clone(), Route::all());
    notifiers.add(
        "failures",
        failures.clone(),
        Route::kinds([NotificationKind::StageFailed, NotificationKind::HostLost]),
    );
    notifiers.add(
        "critical",
        critical.clone(),
        Route::all().min_severity(Severity::Critical),
    );
    assert_eq!(notifiers.names(), ["everything", "failures", "critical"]);

    let sent = [
        notification(NotificationKind::RunCompleted),
        notification(NotificationKind::StageFailed),
        notification(NotificationKind::SpecMismatch),
        // a hold raised to critical by its sender reaches the critical route
        notification(NotificationKind::HoldingOpened).severity(Severity::Critical),
        // a lost host lowered to a warning no longer does
        notification(NotificationKind::HostLost).severity(Severity::Warning),
    ];
    let mut targets = Vec::new();
    for notification in sent {
        let deliveries = notifiers.notify(notification);
        targets.push(
            deliveries
                .iter()
                .map(|delivery| delivery.target.clone())
                .collect::<Vec<_>>(),
        );
        for (_, outcome) in wait_all(deliveries).await {
            assert!(matches!(outcome, DeliveryOutcome::Delivered), "{outcome:?}");
        }
    }
    assert_eq!(
        targets,
        vec![
            vec!["everything"],
            vec!["everything", "failures", "critical"],
            vec!["everything"],
            vec!["everything", "critical"],
            vec!["everything", "failures"],
        ]
    );
    use NotificationKind::*;
    assert_eq!(
        everything.kinds(),
        [
            RunCompleted,
            StageFailed,
            SpecMismatch,
            HoldingOpened,
            HostLost
        ]
    );
    assert_eq!(failures.kinds(), [StageFailed, HostLost]);
    assert_eq!(critical.kinds(), [StageFailed, HoldingOpened]);
}

#[tokio::test]
async fn a_hanging_target_does_not_hold_up_the_caller_or_the_others() {
    // a timeout far longer than the test: notify must return while the
    // hanging send is still in progress
    let notifiers = Notifiers::new().with_timeout(Duration::from_secs(600));
    let hanging = Arc::new(Hanging {
        called: tokio::sync::Notify::new(),
    });
    let recorder = Arc::new(Recorder::default());
    notifiers.add("hanging", hanging.clone(), Route::all());
    notifiers.add("recorder", recorder.clone(), Route::all());

    let called = hanging.called.notified();
    let mut deliveries = notifiers.notify(notification(NotificationKind::StageFailed));
    assert_eq!(deliveries.len(), 2);
    let recorded = deliveries.pop().unwrap();
    let stuck = deliveries.pop().unwrap();
    assert!(matches!(recorded.wait().await, DeliveryOutcome::Delivered));
    assert_eq!(recorder.kinds(), [NotificationKind::StageFailed]);
    called.await;
    assert_eq!(stuck.target, "hanging");
    assert!(
        !stuck.is_finished(),
        "the hanging send is still in its own task"
    );
}

#[tokio::test]
async fn a_hanging_target_times_out() {
    let timeout = Duration::from_millis(50);
    let notifiers = Notifiers::new().with_timeout(timeout);
    notifiers.add(
        "hanging",
        Arc::new(Hanging {
            called: tokio::sync::Notify::new(),
        }),
        Route::all(),
    );
    let outcomes = wait_all(notifiers.notify(notification(NotificationKind::HostLost))).await;
    assert_eq!(outcomes.len(), 1);
    assert!(
        matches!(outcomes[0].1, DeliveryOutcome::TimedOut(after) if after == timeout),
        "{:?}",
        outcomes[0]
    );
    assert_eq!(Notifiers::new().timeout, NOTIFY_TIMEOUT);
    assert_eq!(NOTIFY_TIMEOUT, Duration::from_secs(10));
}

/// A log sink for one test (the runtime is current-thread, so the spawned
/// deliveries log to this thread's subscriber).
#[derive(Clone, Default)]
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_target_is_logged_and_the_others_still_get_it() {
    let sink = LogSink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let notifiers = Notifiers::new();
    let before = Arc::new(Recorder::default());
    let after = Arc::new(Recorder::default());
    notifiers.add("before", before.clone(), Route::all());
    notifiers.add("team-webhook", Arc::new(Refusing), Route::all());
    notifiers.add("after", after.clone(), Route::all());
    let outcomes = wait_all(notifiers.notify(notification(NotificationKind::SpecMismatch))).await;
    let summary: Vec<(&str, bool)> = outcomes
        .iter()
        .map(|(target, outcome)| {
            (
                target.as_str(),
                matches!(outcome, DeliveryOutcome::Delivered),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("before", true), ("team-webhook", false), ("after", true)]
    );
    assert_eq!(before.kinds(), [NotificationKind::SpecMismatch]);
    assert_eq!(after.kinds(), [NotificationKind::SpecMismatch]);

    let logged = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = logged
        .lines()
        .filter(|line| line.contains("team-webhook"))
        .collect();
    assert_eq!(lines.len(), 1, "{logged}");
    assert!(
        lines[0].contains("WARN")
            && lines[0].contains("refused the notification (403): webhook revoked")
            && lines[0].contains("run-1"),
        "{logged}"
    );
}

#[tokio::test]
async fn no_matching_target_spawns_nothing() {
    let notifiers = Notifiers::new();
    notifiers.add(
        "critical",
        Arc::new(Recorder::default()),
        Route::all().min_severity(Severity::Critical),
    );
    assert!(
        notifiers
            .notify(notification(NotificationKind::RunCompleted))
            .is_empty()
    );
}

#[test]
fn outside_a_runtime_nothing_is_sent_and_nothing_panics() {
    let notifiers = Notifiers::new();
    let recorder = Arc::new(Recorder::default());
    notifiers.add("recorder", recorder.clone(), Route::all());
    assert!(
        notifiers
            .notify(notification(NotificationKind::RunCompleted))
            .is_empty()
    );
    assert!(recorder.kinds().is_empty());
}

#[test]
fn clones_share_their_targets() {
    let notifiers = Notifiers::new();
    let clone = notifiers.clone();
    clone.add("late", Arc::new(Recorder::default()), Route::all());
    assert_eq!(notifiers.names(), ["late"]);
    let other = Notifiers::new();
    other.extend_from(&notifiers);
    other.extend_from(&other.clone());
    assert_eq!(other.names(), ["late"]);
}

#[test]
fn a_notification_reads_as_one_line() {
    let text = notification(NotificationKind::StageFailed)
        .host_name("rack4-u12")
        .stage("SMART")
        .reason("reallocated sectors: 12")
        .to_string();
    assert_eq!(
        text,
        "[critical] StageFailed: run run-1 (host rack4-u12), stage SMART: reallocated sectors: 12"
    );
}
