//! Kafka Connect-style source and sink framework of custflow (see DESIGN §9); the
//! connectors themselves arrive with their issue.
