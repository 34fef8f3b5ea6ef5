-- every runway budget of the config file (kind = "runway") against the wallet's latest
-- reading (wallet_runway): runway_days is the shorter of the 7- and 30-day runways
-- (rate_basis says which); status 'crossed' below min_days, else 'ok'. No reading, no row.
create or replace view wallet_runway_status as
with runway_budgets as (
    select name, min_days from budgets where kind = 'runway'
),

wallet as (
    select
        *,
        case
            when runway_7d_days is null then runway_30d_days
            when runway_30d_days is null then runway_7d_days
            else least(runway_7d_days, runway_30d_days)
        end as runway_days
    from wallet_runway
)

select
    b.name as budget_name,
    b.min_days,
    w.recorded_at,
    w.runway_days,
    case
        when w.runway_days is null then 'no spend'
        when w.runway_days = w.runway_7d_days then '7-day'
        else '30-day'
    end as rate_basis,
    w.runway_7d_days,
    w.runway_30d_days,
    w.balance_nanos,
    w.reserved_nanos,
    w.available_nanos,
    w.burn_7d_nanos,
    w.burn_30d_nanos,
    case when w.runway_days < b.min_days then 'crossed' else 'ok' end as status
from runway_budgets as b
cross join wallet as w
