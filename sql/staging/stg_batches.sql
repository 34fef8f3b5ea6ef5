-- staging: one row per batch, renamed and cast; no business logic beyond the two dates
-- every figure uses (README, "Two dates"), defined here once:
--   ended_at   when processing ended: the terminal timestamp of the batch's status
--              (completed_at, failed_at, expired_at, cancelled_at), else any of them.
--   charged_at when the wallet was charged (the CHARGE DATE): the capture time where the
--              pipeline read the capturing answer (charged: true), else ended_at (the
--              gateway's reconciler captures within minutes of the end), else created_at,
--              else the first billing.finalized_at read, else the load time. Never the
--              time of a re-read: an 'already_billed' answer's finalized_at is our read.
--   used_at    when the usage happened: ended_at, else charged_at.
-- is_billed: the gateway billed the money: a cost_nanos with billing.billed true (or, from
-- a gateway version without the flag, on a finished batch). billed_nanos is spend;
-- unbilled_nanos is money priced but not billed (billed false, or not final yet).
create or replace view stg_batches as
with batch_dates as (
    select
        *,
        coalesce(
            case coalesce(lifecycle_status, status)
                when 'completed' then completed_at
                when 'failed' then failed_at
                when 'expired' then expired_at
                when 'cancelled' then cancelled_at
            end,
            completed_at, failed_at, expired_at, cancelled_at
        ) as ended_at,
        case
            when captured_at is not null
                and coalesce(capture_reason, '') not like '%already_captured'
                then captured_at
        end as capture_at,
        coalesce(
            cost_nanos is not null
            and (billed or (billed is null and lifecycle_group = 'terminal')),
            false
        ) as is_billed
    from batches
)

select
    id as batch_id,
    provider,
    session_id,
    status,
    lifecycle_status,
    lifecycle_group,
    endpoint,
    completion_window,
    is_terminal,
    is_final,
    has_billing,
    billed,
    charged,
    captured,
    captured_at,
    capture_reason,
    billing_reason,
    billing_reason_base,
    billing_reason_detail,
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
    expires_at,
    ended_at,
    coalesce(capture_at, ended_at, created_at, billing_finalized_at, loaded_at) as charged_at,
    case
        when capture_at is not null then 'capture'
        when ended_at is not null then 'ended'
        when created_at is not null then 'created'
        when billing_finalized_at is not null then 'first_read'
        else 'loaded'
    end as charge_date_basis,
    coalesce(
        ended_at, capture_at, created_at, billing_finalized_at, loaded_at
    ) as used_at,
    coalesce(in_progress_at, created_at) as usage_started_at,
    is_billed,
    case when is_billed then cost_nanos end as billed_nanos,
    case when not is_billed then cost_nanos end as unbilled_nanos,
    metadata,
    usage,
    usage_requests,
    usage_input_tokens,
    usage_output_tokens,
    usage_total_tokens,
    usage_cost_nanos,
    usage_cost_usd,
    usage_currency,
    pricing_line_count,
    run_id as loaded_by_run_id,
    loaded_at
from batch_dates
