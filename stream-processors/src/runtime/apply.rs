//! Applying a batch: decode the input events, apply them to the customer states, score
//! what changed, save everything in one guarded Redis write, dead-letter what is
//! invalid, and retry a batch that failed on Redis or the broker.

use super::*;

/// A decoded message of a batch.
pub(super) struct Input {
    pos: SourcePos,
    op: Op,
    produced_ms: Option<i64>,
    /// The processing span of a traced message, ended once the batch is saved.
    trace: Option<trace::Context>,
}

/// What an input record asks for.
pub(super) enum Op {
    Apply(Event),
    /// Forget the customer (an erasure request made at `at`).
    Erase {
        customer: String,
        at: i64,
    },
}

impl Op {
    pub(super) fn customer_id(&self) -> &str {
        match self {
            Op::Apply(e) => e.customer_id(),
            Op::Erase { customer, .. } => customer,
        }
    }
}

/// The processing span of `msg` when it carries a trace context (tracing on).
pub(super) fn traced(msg: &OwnedMessage) -> Option<trace::Context> {
    let parent = trace::of_message(msg)?;
    Some(trace::start(
        "custflow.process",
        trace::SpanKind::Consumer,
        &parent,
        trace::message_attributes(msg),
    ))
}

/// A batch applied and scored, its writes encoded ([`Processor::prepare_batch`]):
/// what is left is to save, dead-letter and commit.
pub(super) struct Prepared {
    /// The states of the batch's customers after it (saved by `plan`).
    pub(super) states: HashMap<String, CustomerState>,
    pub(super) plan: SavePlan,
    dead: Vec<DeadLetter>,
    next_offsets: HashMap<(String, i32), i64>,
    /// When each event was produced, for the freshness it is applied with.
    produced: Vec<i64>,
    /// The processing spans of the traced messages, ended once the batch is saved.
    traces: Vec<trace::Context>,
    /// Events applied, duplicates, erasures, events skipped as erased.
    counts: [u64; 4],
}

/// A batch decoded ([`Processor::decode_batch`]), not applied yet.
pub(super) struct Decoded {
    inputs: Vec<Input>,
    dead: Vec<DeadLetter>,
    next_offsets: HashMap<(String, i32), i64>,
}

/// What a batch prepared while the one before it is being saved takes from that one:
/// the states it leaves (taken out) and its writes, whose markers it will find.
pub(super) struct Carry<'a> {
    pub(super) states: &'a mut HashMap<String, CustomerState>,
    pub(super) plan: &'a SavePlan,
}

/// A message for the dead-letter topic.
pub(super) struct DeadLetter {
    msg: OwnedMessage,
    reason: String,
    message: String,
}

pub(super) fn kind_index(k: EventKind) -> u8 {
    match k {
        EventKind::Customer => 0,
        EventKind::Order => 1,
        EventKind::Activity => 2,
    }
}

impl Processor {
    /// Processes `batch`, retrying with backoff while Redis or the broker fail (each try
    /// is idempotent: the states record what they applied), and replaying from the start
    /// the partitions whose state Redis lost. False when shutdown came first.
    pub(super) async fn process_until_done(
        &self,
        mut batch: Vec<OwnedMessage>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let err = match self.process_batch(&batch).await {
                Ok(()) => return Ok(true),
                Err(Error::StateLost(lost)) => match self.recover(&batch, &lost).await {
                    Ok(()) => return Ok(true),
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if !err.retryable() {
                return Err(err);
            }
            // A fenced idempotent producer (after messages timed out) fails every send
            // from then on: stop, so a supervisor restarts the process with a new one.
            let fenced = matches!(&err, Error::Kafka(k) if kafka::is_fenced(k));
            if fenced || self.producer.client().fatal_error().is_some() {
                return Err(Error::Config(format!(
                    "the producer can no longer produce ({err}); restart the processor"
                )));
            }
            Metrics::add(&self.metrics.retries, 1);
            tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "batch failed; retrying");
            tokio::select! {
                _ = shutdown.changed() => return Ok(false),
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            let owned = self.consumer.assignment()?;
            batch.retain(|m| owned.find_partition(m.topic(), m.partition()).is_some());
            if batch.is_empty() {
                return Ok(true);
            }
        }
    }

    /// Processes `batch` and, while the next batch is already waiting (a backlog) and
    /// until `until`, a shutdown or a change of this instance's partitions, the batches
    /// after it, in a pipeline that keeps this process and Redis busy at once: while
    /// Redis saves batch N, batch N+1 (read before that save, except the customers of
    /// batch N, whose states it takes from N) is applied and scored, and batch N+2 is
    /// taken from the consumer and decoded on a task of its own (another core). A batch
    /// is saved only once the one before it is confirmed. A batch whose save or commit
    /// failed is processed again from Redis ([`Processor::process_until_done`]: retries,
    /// recovery) and the next one's preparation dropped. False when shutdown came first.
    pub(super) async fn process_backlog(
        &self,
        batch: Vec<OwnedMessage>,
        shutdown: &mut watch::Receiver<bool>,
        assignment: &Assignment,
        until: Instant,
    ) -> Result<bool> {
        let mut cur = batch;
        let mut ready: Option<Prepared> = None;
        let mut queued: Option<(Vec<OwnedMessage>, Decoded)> = None;
        loop {
            let mut prepared = match ready.take() {
                Some(p) => {
                    Metrics::add(&self.metrics.pipelined, 1);
                    p
                }
                None => match self.prepare_batch(&cur, None).await {
                    Ok(p) => p,
                    Err(_) => {
                        if !self.process_until_done(cur, shutdown).await? {
                            return Ok(false);
                        }
                        match queued.take() {
                            Some((batch, _)) => {
                                cur = batch;
                                continue;
                            }
                            None => return Ok(true),
                        }
                    }
                },
            };
            let go_on = Instant::now() < until && !*shutdown.borrow() && !assignment.has_changed();
            if queued.is_none() && go_on {
                queued = self.intake.waiting_batch().await?;
            }
            let (saved, next) = {
                let (plan, states) = (&prepared.plan, &mut prepared.states);
                let next = async {
                    let (batch, decoded) = queued.take()?;
                    // The batch after it is taken and decoded on another worker while
                    // this one is applied (it needs no state; always awaited, so none
                    // of its messages is dropped).
                    let after = go_on.then(|| {
                        let intake = self.intake.clone();
                        tokio::spawn(async move { intake.waiting_batch().await })
                    });
                    let prepared = self
                        .apply_batch(decoded, Some(Carry { states, plan }))
                        .await
                        .ok();
                    let after = match after {
                        Some(task) => task.await.unwrap_or_else(|e| {
                            Err(Error::Config(format!("taking the next batch failed: {e}")))
                        }),
                        None => Ok(None),
                    };
                    Some((batch, prepared, after))
                };
                // The next batch's load goes to Redis before this batch's save (it
                // reads none of the keys the save writes), so it is applied while Redis
                // saves.
                let mut next = std::pin::pin!(next);
                let early = futures::poll!(next.as_mut());
                let save = self.save(plan);
                match early {
                    std::task::Poll::Ready(n) => (save.await, n),
                    std::task::Poll::Pending => tokio::join!(save, next),
                }
            };
            let done = match saved {
                Ok(()) => self.finish_batch(prepared).await,
                Err(e) => Err(e),
            };
            if done.is_err() && !self.process_until_done(cur, shutdown).await? {
                return Ok(false);
            }
            let Some((batch, prepared, after)) = next else {
                return Ok(true);
            };
            cur = batch;
            ready = prepared.filter(|_| done.is_ok());
            queued = after?;
        }
    }

    /// Processes `batch` from start to end: prepared, saved, committed.
    pub(super) async fn process_batch(&self, batch: &[OwnedMessage]) -> Result<()> {
        let prepared = self.prepare_batch(batch, None).await?;
        self.save(&prepared.plan).await?;
        self.finish_batch(prepared).await
    }

    /// Decodes `batch`, applies it to the states of its customers, scores them and
    /// encodes the writes: everything but saving, dead-lettering and committing.
    pub(super) async fn prepare_batch(
        &self,
        batch: &[OwnedMessage],
        carry: Option<Carry<'_>>,
    ) -> Result<Prepared> {
        let decoded = self.intake.decode_batch(batch).await?;
        self.apply_batch(decoded, carry).await
    }

    /// Applies a decoded batch to the states of its customers, scores them and encodes
    /// the writes. The states come from Redis, except those in `carry` (the states the
    /// batch before left, while it is still being saved), which are taken from it.
    pub(super) async fn apply_batch(
        &self,
        decoded: Decoded,
        carry: Option<Carry<'_>>,
    ) -> Result<Prepared> {
        let Decoded {
            inputs,
            mut dead,
            next_offsets,
        } = decoded;
        // Group by customer, keeping each customer's events in arrival order.
        let mut order: Vec<&str> = Vec::new();
        let mut by_customer: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, inp) in inputs.iter().enumerate() {
            let c = inp.op.customer_id();
            by_customer
                .entry(c)
                .or_insert_with(|| {
                    order.push(c);
                    Vec::new()
                })
                .push(i);
        }
        let parts = distinct(next_offsets.keys().map(|(_, p)| *p));
        // A customer's events all come from one partition number (input topics are
        // keyed by customer): the one its state is kept under on a cluster.
        let home = |c: &str| {
            by_customer[c]
                .first()
                .map_or(0, |&i| inputs[i].pos.partition)
        };
        let located: Vec<(&str, i32)> = order.iter().map(|c| (*c, home(c))).collect();
        let (mut states, guard) = match carry {
            None => self.store.load(&located, &parts).await?,
            Some(Carry { states: from, plan }) => {
                let (carried, rest): (Vec<_>, Vec<_>) =
                    located.iter().partition(|(c, _)| from.contains_key(*c));
                let (mut states, mut guard) = self.store.load(&rest, &parts).await?;
                for (c, _) in carried {
                    if let Some(state) = from.remove(c) {
                        states.insert(c.to_owned(), state);
                    }
                }
                // The markers the batch before leaves, whether this load ran before
                // or after its save.
                guard.follow(plan);
                (states, guard)
            }
        };
        let cluster = self.store.keys().is_cluster();
        let mut changed: Vec<Touched<'_>> = Vec::new();
        let (mut applied, mut dups, mut erased, mut skipped_erased) = (0u64, 0u64, 0u64, 0u64);
        let mut beyond: Vec<(usize, String)> = Vec::new();
        // By partition on a cluster (each partition's script writes its own share);
        // under one key on a standalone Redis, where the shares would be the same keys.
        let mut rollups: BTreeMap<i32, Rollups<'_>> = BTreeMap::new();
        for c in &order {
            let Some(state) = states.get_mut(*c) else {
                continue;
            };
            let shard = if cluster { home(c) } else { 0 };
            let first_before = state.first_order.clone();
            let mut touched = false;
            let mut partition = 0;
            for &i in &by_customer[c] {
                let inp = &inputs[i];
                let event = match &inp.op {
                    Op::Erase { at, .. } => {
                        if state.erase(inp.pos, *at) == Applied::Changed {
                            erased += 1;
                            touched = true;
                            partition = inp.pos.partition;
                        } else {
                            dups += 1;
                        }
                        continue;
                    }
                    // Produced before the customer's erasure (a replay, or a record
                    // that was still in flight): it went with the customer.
                    Op::Apply(_) if state.is_erased(inp.produced_ms) => {
                        skipped_erased += 1;
                        continue;
                    }
                    Op::Apply(e) => e,
                };
                match state.apply_with_effect(event, inp.pos, self.cfg.history_days) {
                    Ok((Applied::Changed, effect)) => {
                        applied += 1;
                        touched = true;
                        partition = inp.pos.partition;
                        if let (true, Event::Order(o)) = (self.cfg.sales, event) {
                            rollups.entry(shard).or_default().add(o, effect, state);
                        }
                    }
                    Ok((Applied::Duplicate, _)) => dups += 1,
                    Err(e) => beyond.push((i, e.to_string())),
                }
            }
            if touched {
                if self.cfg.sales {
                    let r = rollups.entry(shard).or_default();
                    r.attribute(c, state);
                    r.cohort(first_before.as_ref(), state.first_order.as_ref());
                }
                changed.push(Touched {
                    customer: c,
                    partition,
                    last_order_at: features::last_purchase_at(state),
                    trace: by_customer[c]
                        .iter()
                        .rev()
                        .find_map(|&i| inputs[i].trace.clone()),
                    event_ms: by_customer[c]
                        .iter()
                        .filter_map(|&i| inputs[i].produced_ms)
                        .min(),
                });
            }
        }
        // Orders older than the detail kept are refused with the setting to change, not
        // lost.
        for (i, message) in beyond {
            let inp = &inputs[i];
            let Op::Apply(event) = &inp.op else {
                continue;
            };
            let payload = json::encode(event);
            let record = DeadLetter {
                msg: OwnedMessage::new(
                    Some(payload),
                    Some(event.customer_id().as_bytes().to_vec()),
                    self.cfg.topics.name(event.kind().topic()),
                    rdkafka::Timestamp::NotAvailable,
                    inp.pos.partition,
                    inp.pos.offset,
                    None,
                ),
                reason: "beyond_history".into(),
                message,
            };
            dead.push(record);
        }

        let as_of = self
            .cfg
            .clock
            .now()
            .unwrap_or_else(custflow_schemas::time::now_ms);
        let (plan, delivered) = self
            .score_and_plan(
                &mut states,
                &changed,
                Scoring {
                    as_of,
                    cause: Rescore::Event,
                    passes: &[],
                },
                &rollups,
                &guard,
            )
            .await?;
        delivered.await?;
        Ok(Prepared {
            plan,
            dead,
            next_offsets,
            produced: inputs.iter().filter_map(|i| i.produced_ms).collect(),
            traces: inputs.into_iter().filter_map(|i| i.trace).collect(),
            counts: [applied, dups, erased, skipped_erased],
            states,
        })
    }

    /// What follows a prepared batch's save: ends its spans, dead-letters its invalid
    /// messages, records its freshness and commits its offsets.
    pub(super) async fn finish_batch(&self, prepared: Prepared) -> Result<()> {
        let Prepared {
            dead,
            next_offsets,
            produced,
            traces,
            counts: [applied, dups, erased, skipped_erased],
            ..
        } = prepared;
        for cx in &traces {
            cx.span().end();
        }
        // After the states are saved, so a batch retried after a failed save does not
        // dead-letter twice; a crash in between re-detects them on replay.
        self.dead_letter(&dead).await?;
        let visible = custflow_schemas::time::now_ms();
        let mut oldest = 0;
        for p in produced {
            let age = (visible - p).max(0);
            oldest = oldest.max(age);
            self.metrics.freshness.observe(age as f64 / 1000.0);
        }
        self.live_age_ms
            .store(u64::try_from(oldest).unwrap_or(0), Ordering::Relaxed);

        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in &next_offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        self.consumer.commit(&tpl, CommitMode::Async)?;
        Metrics::add(&self.metrics.applied, applied);
        Metrics::add(&self.metrics.duplicates, dups);
        Metrics::add(&self.metrics.erased, erased);
        Metrics::add(&self.metrics.skipped_erased, skipped_erased);
        Metrics::add(&self.metrics.dead_lettered, dead.len() as u64);
        Metrics::add(&self.metrics.batches, 1);
        Ok(())
    }

    /// Writes a batch's encoded writes, timed.
    pub(super) async fn save(&self, plan: &SavePlan) -> Result<()> {
        let started = Instant::now();
        self.store.run_save(plan).await?;
        self.metrics
            .redis_write
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Scores the changed customers and saves them ([`Processor::score_and_plan`]).
    pub(super) async fn score_and_save(
        &self,
        states: &mut HashMap<String, CustomerState>,
        changed: &[Touched<'_>],
        scoring: Scoring<'_>,
        rollups: &BTreeMap<i32, Rollups<'_>>,
        guard: &Guard,
    ) -> Result<()> {
        let (plan, delivered) = self
            .score_and_plan(states, changed, scoring, rollups, guard)
            .await?;
        delivered.await?;
        self.save(&plan).await
    }

    /// Runs the hook (scoring) on the changed customers, then encodes the writes of
    /// their states, index entries, the batch's sales rollups and the pass cursors it
    /// moves, saved in one transaction, while the broker acknowledges what the hook
    /// produced: the plan, and the wait for those acknowledgements, which comes before
    /// the save.
    pub(super) async fn score_and_plan(
        &self,
        states: &mut HashMap<String, CustomerState>,
        changed: &[Touched<'_>],
        Scoring {
            as_of,
            cause,
            passes,
        }: Scoring<'_>,
        rollups: &BTreeMap<i32, Rollups<'_>>,
        guard: &Guard,
    ) -> Result<(SavePlan, Delivery)> {
        let mut scored = Scored::counts(Vec::new());
        if let Some(hook) = &self.hook {
            let touched: HashMap<&str, &Touched<'_>> =
                changed.iter().map(|t| (t.customer, t)).collect();
            let mut list: Vec<Changed<'_>> = states
                .iter_mut()
                .filter_map(|(c, state)| {
                    let t = touched.get(c.as_str())?;
                    Some(Changed {
                        customer: c.as_str(),
                        state,
                        partition: t.partition,
                        cause,
                        trace: t.trace.clone(),
                        event_ms: t.event_ms,
                    })
                })
                .collect();
            scored = hook.on_batch(&mut list, as_of).await?;
        }
        let writes: Vec<Write<'_>> = changed
            .iter()
            .filter_map(|t| {
                Some(Write {
                    customer: t.customer,
                    state: states.get(t.customer)?,
                    partition: t.partition,
                    last_order_at: t.last_order_at,
                })
            })
            .collect();
        let plan = self
            .store
            .plan_save(&writes, &scored.counts, rollups, guard, passes);
        Ok((plan, scored.delivered))
    }

    /// Produces dead letters and waits for the broker's acknowledgement of each.
    pub(super) async fn dead_letter(&self, dead: &[DeadLetter]) -> Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        let topic = self.cfg.topics.name(topics::DLQ);
        let records: Vec<FutureRecord<'_, [u8], [u8]>> = dead
            .iter()
            .map(|d| {
                let headers = custflow_kafka::client::dead_letter_headers(
                    d.msg.topic(),
                    d.msg.partition(),
                    d.msg.offset(),
                    &d.reason,
                    &d.message,
                );
                let mut rec = FutureRecord::to(&topic)
                    .payload(d.msg.payload().unwrap_or_default())
                    .headers(headers);
                if let Some(k) = d.msg.key() {
                    rec = rec.key(k);
                }
                rec
            })
            .collect();
        custflow_kafka::client::produce_all(&self.producer, records, Duration::from_secs(30))
            .await
            .map_err(Error::Kafka)?;
        Ok(())
    }
}

impl Intake {
    /// The next batch, decoded, when a message is waiting in the consumer.
    pub(super) async fn waiting_batch(&self) -> Result<Option<(Vec<OwnedMessage>, Decoded)>> {
        let first = match self.consumer.recv().now_or_never() {
            None => return Ok(None),
            Some(Ok(m)) => m.detach(),
            Some(Err(e)) => {
                consumer_error(e)?;
                return Ok(None);
            }
        };
        let batch = self.fill_batch(first).await?;
        if batch.is_empty() {
            return Ok(None);
        }
        let decoded = self.decode_batch(&batch).await?;
        Ok(Some((batch, decoded)))
    }

    /// The event kind of an input topic's messages.
    fn kind_of(&self, msg: &OwnedMessage) -> Option<EventKind> {
        self.topics.base(msg.topic()).and_then(EventKind::for_topic)
    }

    fn decode(
        &self,
        msg: &OwnedMessage,
        ctx: &ValidationContext,
    ) -> std::result::Result<Event, (String, String)> {
        let kind = self.kind_of(msg).ok_or_else(|| {
            (
                "unknown_topic".to_owned(),
                format!("no event kind for topic {}", msg.topic()),
            )
        })?;
        let bytes = msg.payload().unwrap_or_default();
        let result = if avro::is_framed(bytes) {
            self.codec.decode(kind, bytes, ctx)
        } else {
            json::decode(kind, bytes, ctx)
        };
        result.map_err(|e| {
            let message = match e.field_errors() {
                Some(errs) => serde_json::to_string(errs).unwrap_or_else(|_| e.to_string()),
                None => e.to_string(),
            };
            (e.reason().to_owned(), message)
        })
    }

    /// Decodes `batch`: its events and erasures, its invalid messages, the offsets it
    /// moves each partition to.
    pub(super) async fn decode_batch(&self, batch: &[OwnedMessage]) -> Result<Decoded> {
        let ctx = ValidationContext::now();
        let mut inputs: Vec<Input> = Vec::with_capacity(batch.len());
        let mut dead: Vec<DeadLetter> = Vec::new();
        let mut next_offsets: HashMap<(String, i32), i64> = HashMap::new();
        for msg in batch {
            let e = next_offsets
                .entry((msg.topic().to_owned(), msg.partition()))
                .or_insert(0);
            *e = (*e).max(msg.offset() + 1);
            if let Some(at) = kafka::erasure_at(msg) {
                match (msg.key().map(std::str::from_utf8), self.kind_of(msg)) {
                    (Some(Ok(customer)), Some(kind)) if !customer.is_empty() => {
                        inputs.push(Input {
                            pos: SourcePos {
                                topic: kind_index(kind),
                                partition: msg.partition(),
                                offset: msg.offset(),
                            },
                            op: Op::Erase {
                                customer: customer.to_owned(),
                                at,
                            },
                            produced_ms: msg.timestamp().to_millis(),
                            trace: traced(msg),
                        });
                    }
                    _ => dead.push(DeadLetter {
                        msg: msg.clone(),
                        reason: "invalid_erasure".into(),
                        message: "an erasure request needs a customer id as its key".into(),
                    }),
                }
                continue;
            }
            let mut decoded = self.decode(msg, &ctx);
            if let Err((reason, _)) = &decoded {
                if reason == "unknown_schema" {
                    // Another process may have registered it: catch up once and retry.
                    self.registry.reload().await?;
                    decoded = self.decode(msg, &ctx);
                }
            }
            match decoded {
                Ok(event) => {
                    self.clock.observe(event.occurred_at());
                    inputs.push(Input {
                        pos: SourcePos {
                            topic: kind_index(event.kind()),
                            partition: msg.partition(),
                            offset: msg.offset(),
                        },
                        op: Op::Apply(event),
                        produced_ms: msg.timestamp().to_millis(),
                        trace: traced(msg),
                    });
                }
                Err((reason, message)) => dead.push(DeadLetter {
                    msg: msg.clone(),
                    reason,
                    message,
                }),
            }
        }

        Ok(Decoded {
            inputs,
            dead,
            next_offsets,
        })
    }
}

/// The distinct partitions of `parts`, in order.
pub(super) fn distinct(parts: impl Iterator<Item = i32>) -> Vec<i32> {
    parts.collect::<BTreeSet<i32>>().into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_partitions_come_once_in_ascending_order() {
        assert_eq!(distinct([3, 1, 3, 0, 1].into_iter()), vec![0, 1, 3]);
        assert!(distinct(std::iter::empty()).is_empty());
    }

    #[test]
    fn every_event_kind_has_its_own_index_and_ops_name_their_customer() {
        let kinds = [EventKind::Customer, EventKind::Order, EventKind::Activity];
        let idx: BTreeSet<u8> = kinds.iter().map(|k| kind_index(*k)).collect();
        assert_eq!(idx.len(), kinds.len());
        let erase = Op::Erase {
            customer: "c-9".into(),
            at: 0,
        };
        assert_eq!(erase.customer_id(), "c-9");
    }
}
