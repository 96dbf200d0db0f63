//! The connection to the cluster shared by `offsets` and `recommit`: one
//! consumer client with the group's `group.id` that never subscribes, so it
//! never joins (or disturbs) the group, and one deadline for all requests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::builder::NonEmptyStringValueParser;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::exit::CliError;

/// Connection options common to the commands that talk to a cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// The cluster's bootstrap servers (HOST:PORT[,HOST:PORT...]).
    #[arg(short = 'b', long, value_name = "SERVERS", value_parser = NonEmptyStringValueParser::new())]
    pub bootstrap_servers: String,
    /// Time allowed for all requests to the cluster together: seconds, or a
    /// number with `ms` or `s` (`10`, `2.5s`, `500ms`). When it runs out the
    /// command stops with exit code 4.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// An extra librdkafka client property (security settings and the like),
    /// e.g. `-X security.protocol=SSL`; repeatable.
    #[arg(short = 'X', long = "property", value_name = "KEY=VALUE", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
}

/// `10`, `10s`, `2.5s`, `500ms` -> a duration between 1 ms and 1 hour.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    let secs = num
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(|v| v * scale)
        .ok_or_else(|| format!("{s:?} is not a duration (e.g. 10, 2.5s, 500ms)"))?;
    if !(0.001..=3600.0).contains(&secs) {
        return Err(format!("{s:?} is out of range (1ms to 3600s)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// The committed offset of each partition asked for (`None`: nothing committed).
pub type Committed = BTreeMap<(String, i32), Option<i64>>;

/// A client of the cluster acting for one group, with a deadline.
pub struct Cluster {
    consumer: Arc<BaseConsumer>,
    group: String,
    deadline: Instant,
}

impl Cluster {
    /// A client for `group`. Nothing is sent until the first request.
    pub fn connect(args: &ClusterArgs, group: &str) -> Result<Cluster, CliError> {
        let mut config = ClientConfig::new();
        for (k, v) in &args.properties {
            config.set(k, v);
        }
        config
            .set("bootstrap.servers", &args.bootstrap_servers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("allow.auto.create.topics", "false");
        let consumer: BaseConsumer = config.create().map_err(|e| match e {
            KafkaError::ClientConfig(..) => CliError::Usage(format!("-X/--property: {e}")),
            e => CliError::kafka("creating the Kafka client", e),
        })?;
        Ok(Cluster {
            consumer: Arc::new(consumer),
            group: group.to_owned(),
            deadline: Instant::now() + args.timeout,
        })
    }

    /// Time left before the deadline; an error once it is gone.
    fn remaining(&self, what: &str) -> Result<Duration, CliError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CliError::kafka(what, "timed out (see --timeout)"));
        }
        Ok(left)
    }

    /// The partitions of `topic`, ascending. A topic the cluster does not
    /// have is [`CliError::NotFound`].
    pub fn partitions(&self, topic: &str) -> Result<Vec<i32>, CliError> {
        let what = format!("reading the metadata of topic {topic}");
        let md = self
            .consumer
            .fetch_metadata(Some(topic), self.remaining(&what)?)
            .map_err(|e| CliError::kafka(&what, e))?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| CliError::NotFound(format!("topic {topic} is not in the cluster")))?;
        match t.error().map(RDKafkaErrorCode::from) {
            None => {}
            Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
                return Err(CliError::NotFound(format!(
                    "topic {topic} is not in the cluster"
                )));
            }
            Some(code) => return Err(CliError::kafka(what, code)),
        }
        let mut parts: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        parts.sort_unstable();
        if parts.is_empty() {
            return Err(CliError::NotFound(format!(
                "topic {topic} has no partitions"
            )));
        }
        Ok(parts)
    }

    /// The group's committed offsets of `partitions`.
    pub fn committed(&self, partitions: &[(String, i32)]) -> Result<Committed, CliError> {
        let what = format!("reading the committed offsets of group {}", self.group);
        let mut tpl = TopicPartitionList::new();
        for (t, p) in partitions {
            tpl.add_partition(t, *p);
        }
        let got = self
            .consumer
            .committed_offsets(tpl, self.remaining(&what)?)
            .map_err(|e| CliError::kafka(&what, e))?;
        let mut out = Committed::new();
        for e in got.elements() {
            if let Err(err) = e.error() {
                return Err(CliError::kafka(
                    format!("{what}: {}[{}]", e.topic(), e.partition()),
                    err,
                ));
            }
            let offset = match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            };
            out.insert((e.topic().to_owned(), e.partition()), offset);
        }
        // The list goes before the consumer can be dropped (a live list makes that hang).
        drop(got);
        Ok(out)
    }

    /// The low and high watermarks (log-start and log-end offsets) of a partition.
    pub fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), CliError> {
        let what = format!("reading the log-end offset of {topic}[{partition}]");
        self.consumer
            .fetch_watermarks(topic, partition, self.remaining(&what)?)
            .map_err(|e| CliError::kafka(&what, e))
    }

    /// How many members the group has, as the broker reports it (ListGroups
    /// and DescribeGroups); `None` when the broker does not support those
    /// requests (rdkafka's MockCluster does not).
    pub fn members(&self) -> Result<Option<usize>, CliError> {
        let what = format!("describing group {}", self.group);
        match self
            .consumer
            .fetch_group_list(Some(&self.group), self.remaining(&what)?)
        {
            Ok(list) => Ok(Some(
                list.groups()
                    .iter()
                    .filter(|g| g.name() == self.group)
                    .map(|g| g.members().len())
                    .sum(),
            )),
            Err(KafkaError::GroupListFetch(
                RDKafkaErrorCode::UnsupportedVersion | RDKafkaErrorCode::UnsupportedFeature,
            )) => Ok(None),
            Err(e) => Err(CliError::kafka(what, e)),
        }
    }

    /// Commits `offsets` for the group as a client outside it (no
    /// membership: generation -1), synchronously. The broker refuses such a
    /// commit while the group has members; that is [`CliError::ActiveMembers`].
    pub fn commit(&self, offsets: &[(String, i32, i64)]) -> Result<(), CliError> {
        let what = format!("committing offsets for group {}", self.group);
        let mut tpl = TopicPartitionList::new();
        for (t, p, o) in offsets {
            tpl.add_partition_offset(t, *p, Offset::Offset(*o))
                .map_err(|e| CliError::kafka(&what, e))?;
        }
        // A synchronous commit has no timeout of its own: wait for it on
        // another thread, up to the deadline.
        let left = self.remaining(&what)?;
        let (tx, rx) = mpsc::channel();
        let consumer = Arc::clone(&self.consumer);
        std::thread::spawn(move || {
            let _ = tx.send(consumer.commit(&tpl, CommitMode::Sync));
        });
        match rx.recv_timeout(left) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::RebalanceInProgress,
            ))) => Err(CliError::ActiveMembers {
                group: self.group.clone(),
                members: None,
            }),
            Ok(Err(e)) => Err(CliError::kafka(what, e)),
            Err(_) => Err(CliError::kafka(
                what,
                "no answer before the deadline (see --timeout); the commit may still land: check with `offset-guard offsets`",
            )),
        }
    }
}

/// `topic[partition]` (unescaped: [`CliError`]'s display escapes it).
pub fn tp_label(topic: &str, partition: i32) -> String {
    format!("{topic}[{partition}]")
}
