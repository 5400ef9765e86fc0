//! Background rescoring: a new model's pass over every customer in slices between live
//! batches, and the clock sweep that rescores customers crossing the at-risk threshold.

use super::*;

/// A slice of a rescoring pass read, scored and its scores sent, not saved yet
/// ([`Processor::rescore_slice`]).
pub(super) struct InFlight {
    plan: SavePlan,
    /// The acknowledgements of its scores, waited for before the save.
    delivered: Delivery,
    /// The pass cursors as its save leaves them.
    moved: Vec<(i32, PassCursor)>,
    /// Customers it rescored.
    rescored: usize,
}

/// A saved slice: the pass cursors it moved, and how many customers it rescored.
type Saved = (Vec<(i32, PassCursor)>, usize);

impl Processor {
    /// Brings the passes of the owned partitions up to `model`: reads the cursors of
    /// partitions not seen yet from Redis (another instance may have moved them), forgets
    /// partitions no longer owned, and starts a pass wherever the cursor's model is not
    /// `model`. Returns how many passes started.
    pub(super) async fn plan_passes(
        &self,
        passes: &mut HashMap<i32, PassCursor>,
        model: &str,
    ) -> Result<usize> {
        let owned = self.owned_order_partitions()?;
        passes.retain(|p, _| owned.contains(p));
        let unread: Vec<i32> = owned
            .iter()
            .filter(|p| !passes.contains_key(p))
            .copied()
            .collect();
        if !unread.is_empty() {
            passes.extend(
                unread
                    .iter()
                    .copied()
                    .zip(self.store.passes(&unread).await?),
            );
        }
        let mut started = 0;
        for cursor in passes.values_mut() {
            started += usize::from(cursor.start(model));
        }
        Ok(started)
    }

    /// Rescores the next slice of every owned partition's customers with the model of
    /// its pass (cause [`Rescore::NewModel`]), saving the moved cursors with the states;
    /// true when every pass is done.
    ///
    /// Slices overlap: a slice is read, scored and its scores sent, then left in
    /// `in_flight`; the next call reads and scores the following slice while the broker
    /// acknowledges that one's scores and Redis saves it. A slice is saved only after
    /// the one before it (its save is guarded by the markers that save leaves), and the
    /// cursors in `passes` move only with a save: a slice whose predecessor failed is
    /// dropped and read again (its scores, already sent, are sent again with the same
    /// versions, which the sinks apply once). Anything else the run loop does between slices waits for
    /// [`Processor::settle_slice`] first.
    pub(super) async fn rescore_slice(
        &self,
        passes: &mut HashMap<i32, PassCursor>,
        in_flight: &mut Option<InFlight>,
    ) -> Result<bool> {
        let Some(now) = self.cfg.clock.now() else {
            return Ok(false); // no time to score as of yet (an event clock before events)
        };
        // Every owned partition's next slice, after the slice in flight, then one load,
        // score and save for all: round trips per slice, not per partition. The cursors
        // move in copies, kept once the save succeeded.
        let ahead: HashMap<i32, &PassCursor> = in_flight
            .iter()
            .flat_map(|f| f.moved.iter().map(|(p, c)| (*p, c)))
            .collect();
        let due: Vec<(i32, PassCursor)> = self
            .owned_order_partitions()?
            .into_iter()
            .filter_map(|p| {
                let cursor = ahead.get(&p).copied().or_else(|| passes.get(&p))?;
                (!cursor.done).then(|| (p, cursor.clone()))
            })
            .collect();
        if due.is_empty() {
            self.settle_slice(passes, in_flight).await?;
            return Ok(passes.values().all(|c| c.done));
        }
        let before = in_flight.take();
        let follow = before.as_ref().map(|f| f.plan.clone());
        let settled = async {
            match before {
                Some(f) => self.finish_slice(f).await.map(Some),
                None => Ok(None),
            }
        };
        let (settled, next) = tokio::join!(settled, self.start_slice(due, now, follow));
        match settled {
            Ok(saved) => saved.into_iter().for_each(|s| self.saved(passes, s)),
            Err(e) => {
                // Its scores went out: their acknowledgements are awaited (whatever they
                // say), so the emitted count stays what the topic holds.
                if let Ok(next) = next {
                    let _ = next.delivered.await;
                }
                return Err(e);
            }
        }
        *in_flight = Some(next?);
        Ok(false)
    }

    /// Finishes the slice in flight, if any ([`Processor::rescore_slice`]): its scores
    /// acknowledged, its states and cursors saved.
    pub(super) async fn settle_slice(
        &self,
        passes: &mut HashMap<i32, PassCursor>,
        in_flight: &mut Option<InFlight>,
    ) -> Result<()> {
        if let Some(f) = in_flight.take() {
            let saved = self.finish_slice(f).await?;
            self.saved(passes, saved);
        }
        Ok(())
    }

    /// Takes the cursors a saved slice moved, and counts its customers.
    fn saved(&self, passes: &mut HashMap<i32, PassCursor>, (moved, rescored): Saved) {
        Metrics::add(&self.metrics.model_rescored, rescored as u64);
        passes.extend(moved);
    }

    /// Reads, scores and sends the next slice of the `due` passes, to be saved after
    /// the save of `follow` (the slice before it, whose writes its guard expects).
    async fn start_slice(
        &self,
        due: Vec<(i32, PassCursor)>,
        now: i64,
        follow: Option<SavePlan>,
    ) -> Result<InFlight> {
        let take = self.cfg.rescore_slice.div_ceil(due.len()).max(1);
        // The partitions' index pages are read at once: one round trip's wait, not one
        // per partition.
        let pages = futures::future::try_join_all(
            due.iter()
                .map(|(p, c)| self.store.index_after(*p, c.after.as_ref(), None, take)),
        )
        .await?;
        let mut slice: Vec<(String, i32)> = Vec::new();
        let mut moved: Vec<(i32, PassCursor)> = Vec::new();
        for ((p, mut cursor), page) in due.into_iter().zip(pages) {
            slice.extend(cursor.advance(page, take).into_iter().map(|(_, c)| (c, p)));
            moved.push((p, cursor));
        }
        let ids: Vec<(&str, i32)> = slice.iter().map(|(c, p)| (c.as_str(), *p)).collect();
        let parts: Vec<i32> = moved.iter().map(|(p, _)| *p).collect();
        let (mut states, mut guard) = self.store.load(&ids, &parts).await?;
        if let Some(plan) = &follow {
            guard.follow(plan);
        }
        let changed: Vec<Touched<'_>> = slice
            .iter()
            .filter(|(c, _)| states.contains_key(c))
            .map(|(c, p)| Touched::rescored(c, *p))
            .collect();
        let cursors: Vec<(i32, &PassCursor)> = moved.iter().map(|(p, c)| (*p, c)).collect();
        let (plan, delivered) = self
            .score_and_plan(
                &mut states,
                &changed,
                Scoring {
                    as_of: now,
                    cause: Rescore::NewModel,
                    passes: &cursors,
                },
                &BTreeMap::new(),
                &guard,
            )
            .await?;
        Ok(InFlight {
            plan,
            delivered,
            rescored: changed.len(),
            moved,
        })
    }

    /// Waits for a slice's acknowledgements, then saves it: the cursors it moved and
    /// how many customers it rescored.
    async fn finish_slice(&self, slice: InFlight) -> Result<Saved> {
        let InFlight {
            plan,
            delivered,
            moved,
            rescored,
        } = slice;
        delivered.await?;
        self.save(&plan).await?;
        Ok((moved, rescored))
    }

    /// Exports how many owned partitions are still rolling a model out.
    pub(super) fn count_rollouts(&self, passes: &HashMap<i32, PassCursor>) {
        let running = passes.values().filter(|c| !c.done).count() as u64;
        self.metrics
            .rollout_running
            .store(running, std::sync::atomic::Ordering::Relaxed);
    }

    /// The partitions of the orders topic this instance owns.
    pub(super) fn owned_order_partitions(&self) -> Result<Vec<i32>> {
        let orders = self.cfg.topics.name(EventKind::Order.topic());
        Ok(self
            .consumer
            .assignment()?
            .elements()
            .iter()
            .filter(|e| e.topic() == orders)
            .map(|e| e.partition())
            .collect())
    }

    /// Rescores the customers of owned partition `p` due as the clock advances: those
    /// whose last order just crossed the at-risk threshold (from the sorted index, no
    /// scan), and a bounded slice of the rest in rotation (P(alive) and CLV decay).
    /// Nothing when `p` is no longer owned.
    pub(super) async fn sweep_partition(&self, p: i32, rotate: usize) -> Result<usize> {
        if self.hook.is_none() || !self.owned_order_partitions()?.contains(&p) {
            return Ok(0);
        }
        let Some(now) = self.cfg.clock.now() else {
            return Ok(0);
        };
        let threshold =
            now - (self.cfg.at_risk_days * custflow_schemas::time::DAY_MS as f64) as i64;
        let customers = self.store.sweep_candidates(p, threshold, rotate).await?;
        if customers.is_empty() {
            return Ok(0);
        }
        let ids: Vec<(&str, i32)> = customers.iter().map(|c| (c.as_str(), p)).collect();
        let (mut states, guard) = self.store.load(&ids, &[p]).await?;
        let changed: Vec<Touched<'_>> = ids
            .iter()
            .filter(|(c, _)| states.contains_key(*c))
            .map(|(c, _)| Touched::rescored(c, p))
            .collect();
        self.score_and_save(
            &mut states,
            &changed,
            Scoring {
                as_of: now,
                cause: Rescore::Clock,
                passes: &[],
            },
            &BTreeMap::new(),
            &guard,
        )
        .await?;
        Metrics::add(&self.metrics.clock_rescored, changed.len() as u64);
        Ok(changed.len())
    }
}
