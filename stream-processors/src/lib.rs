//! Stream processors of custflow: consumer runtime and per-customer feature state in
//! Redis (see DESIGN §4–5); the runtime arrives with its issue.
