-- staging: one row per batch, renamed and cast; no business logic beyond the charge date.
-- charged_at dates a charge: billing.finalized_at, else the terminal timestamp, else created_at.
create or replace view stg_batches as
select
    id as batch_id,
    provider,
    session_id,
    status,
    lifecycle_status,
    endpoint,
    completion_window,
    is_terminal,
    is_final,
    has_billing,
    billed,
    charged,
    billing_reason,
    cost_nanos,
    api_cost_usd,
    breakdown_total_nanos,
    breakdown_total_usd,
    breakdown_total_cents,
    request_counts_total,
    request_counts_completed,
    request_counts_failed,
    created_at,
    in_progress_at,
    finalizing_at,
    completed_at,
    failed_at,
    expired_at,
    cancelled_at,
    billing_finalized_at,
    last_event_at,
    coalesce(
        billing_finalized_at, completed_at, failed_at, expired_at, cancelled_at, created_at
    ) as charged_at,
    metadata,
    usage,
    pricing_line_count,
    run_id as loaded_by_run_id,
    loaded_at
from batches
