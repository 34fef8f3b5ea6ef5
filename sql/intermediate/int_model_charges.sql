-- every billed nano attributed to a model, as billed. Where a batch has request rows, each
-- model's share is the sum of its rows' cost_nanos (the model the provider reported) and
-- what the rows do not explain is one 'unattributed' row; a batch without request rows is
-- attributed as a whole to metadata.model, else 'unknown', its requests taken from the
-- batch's request_counts.total (the gateway's count) instead of its rows. A batch's current
-- bill is dated at its first charge (charged_at, from the FOCUS books); a restated bill's
-- difference is moved to the restatement's date by a pair of 'restatement' rows (minus at
-- the first charge, plus where restated), so each period sums exactly to int_billed_charges.
create or replace view int_model_charges as
with first_charges as (
    select
        batch_id,
        min(charged_at) as charged_at
    from int_billed_charges
    where booking = 'charge'
    group by batch_id
),

billed as (
    select
        b.batch_id,
        b.provider,
        b.session_id,
        b.metadata ->> '$.model' as metadata_model,
        b.billed_nanos as cost_nanos,
        b.request_counts_total,
        coalesce(f.charged_at, b.charged_at) as charged_at
    from stg_batches as b
    left join first_charges as f on f.batch_id = b.batch_id
    where b.is_billed
),

corrections as (
    select
        c.batch_id,
        c.provider,
        c.session_id,
        c.charged_at,
        f.charged_at as first_charged_at,
        sum(c.charge_nanos)::hugeint as cost_nanos
    from int_billed_charges as c
    inner join first_charges as f on f.batch_id = c.batch_id
    where c.booking = 'correction'
    group by all
),

request_models as (
    select
        batch_id,
        model,
        count(*) as requests,
        count(*) filter (where request_status = 'completed') as completed_requests,
        count(*) filter (where request_status <> 'completed') as failed_requests,
        coalesce(sum(input_tokens), 0) as input_tokens,
        coalesce(sum(output_tokens), 0) as output_tokens,
        coalesce(sum(cost_nanos), 0)::hugeint as cost_nanos
    from stg_batch_requests
    group by batch_id, model
),

request_totals as (
    select
        batch_id,
        sum(cost_nanos)::hugeint as cost_nanos
    from request_models
    group by batch_id
),

from_requests as (
    select
        b.batch_id,
        b.provider,
        b.session_id,
        b.charged_at,
        r.model,
        'requests' as attribution,
        r.requests,
        r.completed_requests,
        r.failed_requests,
        r.input_tokens,
        r.output_tokens,
        r.cost_nanos
    from billed as b
    inner join request_models as r on r.batch_id = b.batch_id
),

unattributed as (
    select
        b.batch_id,
        b.provider,
        b.session_id,
        b.charged_at,
        'unattributed' as model,
        'unattributed' as attribution,
        0 as requests,
        0 as completed_requests,
        0 as failed_requests,
        0 as input_tokens,
        0 as output_tokens,
        (b.cost_nanos - t.cost_nanos)::hugeint as cost_nanos
    from billed as b
    inner join request_totals as t on t.batch_id = b.batch_id
    where b.cost_nanos <> t.cost_nanos
),

from_batches as (
    select
        b.batch_id,
        b.provider,
        b.session_id,
        b.charged_at,
        coalesce(b.metadata_model, 'unknown') as model,
        case when b.metadata_model is null then 'none' else 'metadata' end as attribution,
        b.request_counts_total::bigint as requests,
        null::bigint as completed_requests,
        null::bigint as failed_requests,
        null::bigint as input_tokens,
        null::bigint as output_tokens,
        b.cost_nanos::hugeint as cost_nanos
    from billed as b
    where not exists (select 1 from request_totals as t where t.batch_id = b.batch_id)
),

restated as (
    select
        batch_id,
        provider,
        session_id,
        charged_at,
        'restatement' as model,
        'restatement' as attribution,
        cost_nanos
    from corrections
    union all
    select
        batch_id,
        provider,
        session_id,
        first_charged_at as charged_at,
        'restatement' as model,
        'restatement' as attribution,
        -cost_nanos as cost_nanos
    from corrections
)

select * from from_requests
union all by name
select * from unattributed
union all by name
select * from from_batches
union all by name
select * from restated
