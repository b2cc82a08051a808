import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("reliability", "0004_prices_and_control_changes"),
    ]

    operations = [
        migrations.AddField(
            model_name="ratelimitbudget",
            name="usd_per_day",
            field=models.DecimalField(
                blank=True,
                decimal_places=4,
                help_text=(
                    "Optional cap on spend per UTC day, in US dollars (priced from the price "
                    "table)."
                ),
                max_digits=12,
                null=True,
                validators=[django.core.validators.MinValueValidator(0)],
            ),
        ),
        migrations.AddField(
            model_name="ratelimitbudget",
            name="usd_per_analysis",
            field=models.DecimalField(
                blank=True,
                decimal_places=4,
                help_text="Optional cap on spend per analysis, in US dollars.",
                max_digits=12,
                null=True,
                validators=[django.core.validators.MinValueValidator(0)],
            ),
        ),
        migrations.AddField(
            model_name="ratelimitbudget",
            name="output_seconds_returned",
            field=models.FloatField(default=0.0),
        ),
        migrations.AddField(
            model_name="ratelimitbudget",
            name="output_slack",
            field=models.FloatField(default=0.0),
        ),
    ]
