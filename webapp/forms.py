"""Form pieces shared by features."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import DateField, SelectField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, ValidationError

from webapp.models.order import ORDER_STATUSES

MAX_RANGE_DAYS = 3660


class Form(FlaskForm):
    """The base of every form. CSRF is checked once per request, for every POST, by the app-wide
    CSRFProtect; templates carry its token in a hidden ``csrf_token`` input, so a form adds no
    token field (and no second check) of its own."""

    class Meta:
        csrf = False


class OrderFilterForm(Form):
    """A date range (inclusive, UTC) and an optional order status: what exports and reports select."""

    date_from = DateField("From", validators=[InputRequired(message="Choose a start date.")])
    date_to = DateField("To", validators=[InputRequired(message="Choose an end date.")])
    status = SelectField(
        "Status",
        choices=[SelectChoice("", "Any status")] + [SelectChoice(s, s.capitalize()) for s in ORDER_STATUSES],
    )

    def validate_date_to(self, field: DateField) -> None:
        """The range must run forwards and not span more than ten years."""
        if self.date_from.data and field.data:
            if field.data < self.date_from.data:
                raise ValidationError("The end date is before the start date.")
            if (field.data - self.date_from.data).days > MAX_RANGE_DAYS:
                raise ValidationError("Choose a range of at most ten years.")
