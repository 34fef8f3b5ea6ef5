-- FinOps FOCUS charges: one row per pricing line (plus adjustment rows), summing exactly
-- to the bill. Daily charge periods (UTC) on the charge date; monthly billing periods.
create or replace view focus_charges as
with charges as (
    select
        *,
        date_trunc('day', charged_at at time zone 'UTC') at time zone 'UTC' as charge_day,
        date_trunc('month', charged_at at time zone 'UTC') at time zone 'UTC' as charge_month,
        cast(charge_nanos as decimal(38, 0)) * 0.000000001 as charge_usd
    from int_charge_lines
)

select
    charge_usd as BilledCost,
    charge_usd as EffectiveCost,
    charge_usd as ListCost,
    charge_usd as ContractedCost,
    'USD' as BillingCurrency,
    charge_month as BillingPeriodStart,
    charge_month + interval 1 month as BillingPeriodEnd,
    charge_day as ChargePeriodStart,
    charge_day + interval 1 day as ChargePeriodEnd,
    case charge_kind when 'usage' then 'Usage' else 'Adjustment' end as ChargeCategory,
    null::varchar as ChargeClass,
    case charge_kind
        when 'usage' then dimension || ' for batch ' || batch_id
        else 'billed cost not itemised in pricing lines for batch ' || batch_id
    end as ChargeDescription,
    billable_units as PricingQuantity,
    case when unit_size is not null
        then cast(unit_size as bigint)::varchar || ' ' || dimension
        else dimension
    end as PricingUnit,
    quantity as ConsumedQuantity,
    dimension as ConsumedUnit,
    provider as ServiceProviderName,
    'Batch inference' as ServiceName,
    'AI and Machine Learning' as ServiceCategory,
    concat_ws(':', provider, coalesce(model, 'unknown'), coalesce(dimension, 'adjustment')) as SkuId,
    case when unit_price_usd is not null
        then concat_ws(':', provider, coalesce(model, 'unknown'), dimension,
                       coalesce(pricing_plan, ''), unit_price_usd::varchar)
    end as SkuPriceId,
    batch_id as ResourceId,
    json_object('session_id', session_id, 'metadata', metadata) as Tags,
    session_id as x_SessionId,
    line_index as x_LineIndex,
    charge_nanos as x_CostNanos,
    model as x_Model,
    pricing_plan as x_PricingPlan,
    service_tier as x_ServiceTier,
    endpoint as x_Endpoint,
    billing_reason as x_BillingReason,
    charged as x_Charged,
    charged_at as x_ChargedAt
from charges
order by ChargePeriodStart, ResourceId, x_LineIndex nulls last
