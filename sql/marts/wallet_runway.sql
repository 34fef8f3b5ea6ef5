-- the wallet as GET /v1/credits last reported it (credit_readings: recorded by API runs
-- and `billing credits`), with its trailing burn and runway. burn_7d_nanos /
-- burn_30d_nanos: billed spend by charge time in the 7 and 30 days (of 24 hours) up to
-- the reading, from the FOCUS books (charge_ledger.billing_period_at: a bill at its
-- first charge, a restatement's difference when restated; the same money by the same
-- dates as budget_status, read from one table by time instead of the whole history). reserved_nanos: money the gateway holds for
-- running batches; available_nanos = balance - reserved. runway_7d_days /
-- runway_30d_days: available money over the window's daily rate (burn / days), rounded
-- down to 0.1 day; null when nothing was spent in the window (no burn, no end).
create or replace view wallet_runway as
with latest as (
    select *
    from credit_readings
    order by recorded_at desc
    limit 1
),

burn as (
    select
        coalesce(sum(c.charge_nanos) filter (
            where c.billing_period_at > l.recorded_at - interval 7 day
        ), 0)::hugeint as burn_7d_nanos,
        coalesce(sum(c.charge_nanos) filter (
            where c.billing_period_at > l.recorded_at - interval 30 day
        ), 0)::hugeint as burn_30d_nanos
    from latest as l
    left join charge_ledger as c
        on c.billing_period_at <= l.recorded_at
        and c.billing_period_at > l.recorded_at - interval 30 day
)

select
    l.recorded_at,
    l.source,
    l.balance_nanos,
    nanos_to_usd(l.balance_nanos) as balance_usd,
    l.reserved_nanos,
    nanos_to_usd(l.reserved_nanos) as reserved_usd,
    l.available_nanos,
    nanos_to_usd(l.available_nanos) as available_usd,
    b.burn_7d_nanos,
    nanos_to_usd(b.burn_7d_nanos) as burn_7d_usd,
    b.burn_30d_nanos,
    nanos_to_usd(b.burn_30d_nanos) as burn_30d_usd,
    case when b.burn_7d_nanos > 0
        then ((greatest(l.available_nanos, 0)::hugeint * 70) // b.burn_7d_nanos / 10)
            ::decimal(18, 1)
    end as runway_7d_days,
    case when b.burn_30d_nanos > 0
        then ((greatest(l.available_nanos, 0)::hugeint * 300) // b.burn_30d_nanos / 10)
            ::decimal(18, 1)
    end as runway_30d_days
from latest as l
cross join burn as b
