"""Orders and customers: the business data that exports and reports read."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import DateTime, ForeignKey, Index, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from webapp.extensions import Model

ORDER_STATUSES = ("pending", "paid", "shipped", "cancelled", "refunded")


class Customer(Model):
    """Someone who buys from the business."""

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(2000))
    email: Mapped[str] = mapped_column(String(254))
    country: Mapped[str] = mapped_column(String(2), default="")


class Order(Model):
    """One sale."""

    __tablename__ = "orders"
    __table_args__ = (Index("ix_orders_created_status", "created_at", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))
    items: Mapped[int] = mapped_column(default=1)
    total: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    currency: Mapped[str] = mapped_column(String(3), default="EUR")

    customer = relationship("Customer", lazy="raise")
