//! Redis key names. Braces around the customer id are a Redis Cluster hash tag, so all
//! keys of one customer live in one slot.

/// The hash of one customer's features, scores and source offsets.
pub fn features(customer_id: &str) -> String {
    format!("cf:{{{customer_id}}}:f")
}

/// The model artefact in use.
pub const MODEL_CURRENT: &str = "cf:model:current";

/// One stored model artefact version.
pub fn model(version: &str) -> String {
    format!("cf:model:{version}")
}

/// Sorted set of customers by last purchase time, one per input partition, so each
/// processor owns the index of its partitions and a cluster can shard it.
pub fn last_order_index(partition: i32) -> String {
    format!("cf:idx:last_order:{{p{partition}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hash_tagged() {
        assert_eq!(features("c-17"), "cf:{c-17}:f");
        assert_eq!(model("v3"), "cf:model:v3");
        assert_eq!(last_order_index(5), "cf:idx:last_order:{p5}");
    }
}
