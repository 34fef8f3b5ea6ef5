-- the one money rule: integer nano-USD to exact dollars, DECIMAL(38, 9). Never a float.
create or replace macro nanos_to_usd(nanos) as
    cast(cast(nanos as decimal(38, 0)) * 0.000000001 as decimal(38, 9))
