-- every billed nano "as billed": the FOCUS books (charge_ledger), one row per booked
-- charge line, with the batch's provider and session. A charge stays where it was first
-- booked; a restated bill adds a 'correction' row dated when it was restated, so a closed
-- month never changes. Sums exactly to the current bills.
--   charged_at: when the wallet was charged (the charge date; a correction's: the
--               restatement) -- every spend view, budget and the report date money by it;
--   used_at:    when the usage happened (the batch's end) -- FOCUS ChargePeriod.
create or replace view int_billed_charges as
select
    l.batch_id,
    coalesce(b.provider, l.provider) as provider,
    b.session_id,
    l.model,
    l.dimension,
    l.charge_kind,
    case when l.charge_class = 'Correction' then 'correction' else 'charge' end as booking,
    l.quantity,
    l.charge_nanos,
    l.billing_period_at as charged_at,
    l.charge_period_at as used_at,
    l.billing_reason,
    l.run_id,
    l.recorded_at
from charge_ledger as l
left join stg_batches as b on b.batch_id = l.batch_id
