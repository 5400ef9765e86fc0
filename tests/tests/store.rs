//! The processor's guarded save against a real Redis: a batch's writes land only while
//! the partition markers its load saw are unchanged. A marker moved by another writer
//! (another owner, a delayed write) refuses the batch with a conflict, a missing marker
//! (an emptied Redis) with lost state, and a refused batch writes nothing. A batch loaded
//! while the one before it was being saved expects the markers that save leaves, and a
//! load that named no partition saves unguarded.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeMap;

use custflow_feature_store::keys::Keys;
use custflow_feature_store::sales::Rollups;
use custflow_feature_store::state::CustomerState;
use custflow_processors::store::{Guard, SavePlan, Store, Write};
use custflow_processors::Error;
use redis::AsyncCommands;

/// The save of one customer's state in partition 0.
fn plan(store: &Store, customer: &str, state: &CustomerState, guard: &Guard) -> SavePlan {
    let writes = [Write {
        customer,
        state,
        partition: 0,
        last_order_at: None,
    }];
    store.plan_save(
        &writes,
        &[],
        &BTreeMap::<i32, Rollups<'_>>::new(),
        guard,
        &[],
    )
}

/// Whether `customer`'s state is stored.
async fn stored(store: &Store, customer: &str) -> bool {
    let key = store.keys().features(customer, 0);
    let v: Option<Vec<u8>> = store.connection().get(key).await.unwrap();
    v.is_some()
}

/// Saves `customer` with `guard`, a save that must be refused: why, once it is checked
/// that nothing was written.
async fn refused(store: &Store, customer: &str, state: &CustomerState, guard: &Guard) -> Error {
    let err = store
        .run_save(&plan(store, customer, state, guard))
        .await
        .unwrap_err();
    assert!(
        !stored(store, customer).await,
        "{customer} written by a refused save"
    );
    err
}

#[tokio::test]
async fn a_save_lands_only_while_the_markers_its_load_saw_are_unchanged() {
    custflow_tests::ensure_stack();
    let prefix = custflow_tests::unique("store-");
    let store = Store::connect(&custflow_tests::redis_url(), Keys::new(prefix.as_str()))
        .await
        .unwrap();
    store.mark_ready(0).await.unwrap();

    // Unchanged markers: the save lands.
    let (states, guard) = store.load(&[("c1", 0)], &[0]).await.unwrap();
    store
        .run_save(&plan(&store, "c1", &states["c1"], &guard))
        .await
        .unwrap();
    assert!(stored(&store, "c1").await);

    // Another writer moved the marker after the load: a conflict, nothing written.
    let (states, guard) = store.load(&[("c2", 0)], &[0]).await.unwrap();
    store.mark_ready(0).await.unwrap();
    let err = refused(&store, "c2", &states["c2"], &guard).await;
    assert!(matches!(&err, Error::Conflict(p) if p == &[0]), "{err}");

    // The marker is gone (an emptied Redis): lost state, nothing written.
    let (states, guard) = store.load(&[("c3", 0)], &[0]).await.unwrap();
    let () = store
        .connection()
        .del(store.keys().partition_state(0))
        .await
        .unwrap();
    let err = refused(&store, "c3", &states["c3"], &guard).await;
    assert!(matches!(&err, Error::StateLost(p) if p == &[0]), "{err}");

    // Two batches in a pipeline: the second is loaded before the first is saved and
    // expects the markers the first save leaves; both land, in order.
    store.mark_ready(0).await.unwrap();
    let (first, guard) = store.load(&[("c4", 0)], &[0]).await.unwrap();
    let first_plan = plan(&store, "c4", &first["c4"], &guard);
    let (second, mut next_guard) = store.load(&[("c5", 0)], &[0]).await.unwrap();
    next_guard.follow(&first_plan);
    let second_plan = plan(&store, "c5", &second["c5"], &next_guard);
    store.run_save(&first_plan).await.unwrap();
    store.run_save(&second_plan).await.unwrap();
    assert!(stored(&store, "c4").await && stored(&store, "c5").await);
    // Saved twice, a plan finds the markers moved by its own first save.
    let err = store.run_save(&second_plan).await.unwrap_err();
    assert!(matches!(&err, Error::Conflict(p) if p == &[0]), "{err}");

    // A load that named no partition guards nothing: its save lands unguarded (a `WATCH`
    // of no key would be a Redis error, retried for ever).
    let (states, guard) = store.load(&[("c6", 0)], &[]).await.unwrap();
    store
        .run_save(&plan(&store, "c6", &states["c6"], &guard))
        .await
        .unwrap();
    assert!(stored(&store, "c6").await);

    let _ = store.wipe().await;
}
